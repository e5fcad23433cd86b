from perceptd.cli import main

raise SystemExit(main())
