from perceptd.cli import main

if __name__ == "__main__":  # spawned workers (retrain --nproc) re-import this module
    raise SystemExit(main())
