"""`perceptd install-service`: render the systemd units with this installation's paths.

The units are generated here (one source of truth, also inside a wheel); the files in the
repository's systemd/ folder are these templates rendered with the defaults, and a test
keeps them identical.  Resource limits are plain unit settings: override them with
`systemctl edit perceptd` (a drop-in) rather than editing the rendered file.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from perceptd.errors import UserError

DEFAULT_EXE = "/usr/local/bin/perceptd"
DEFAULT_CONFIG = "/etc/perceptd/config.yaml"
STATE_DIR = "/var/lib/perceptd"
UNIT_DIR = "etc/systemd/system"


@dataclass(frozen=True)
class ServiceOptions:
    exe: str = DEFAULT_EXE
    config: str = DEFAULT_CONFIG
    user: str | None = None  # None: DynamicUser=yes (a transient user named perceptd)
    memory_max: str = "2G"
    cpu_quota: str = "200%"
    watchdog_s: int = 30
    retrain_at: str = "*-*-* 03:00:00"

    def check(self) -> None:
        for name, path in (("--exe", self.exe), ("--config", self.config)):
            if not path.startswith("/") or any(c.isspace() for c in path):
                raise UserError(f"{name} {path!r}: need an absolute path without spaces")
        if self.user is not None and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", self.user):
            raise UserError(f"--user {self.user!r}: not a valid user name")
        if not re.fullmatch(r"\d+[KMGT]?|infinity", self.memory_max):
            raise UserError(f"--memory-max {self.memory_max!r}: expected e.g. 2G, 512M or infinity")
        if not re.fullmatch(r"\d+%", self.cpu_quota):
            raise UserError(f"--cpu-quota {self.cpu_quota!r}: expected a percentage, e.g. 200%")
        if not 2 <= self.watchdog_s <= 3600:
            raise UserError(f"--watchdog-sec {self.watchdog_s}: expected 2-3600")


def _identity(o: ServiceOptions) -> str:
    if o.user is None:
        return ("# A transient user shared by both units; systemd owns StateDirectory for it.\n"
                "DynamicUser=yes\nUser=perceptd\nGroup=perceptd")
    return f"User={o.user}\nGroup={o.user}"


def _protect_home(o: ServiceOptions) -> str:
    homes = ("/home/", "/root/", "/run/user/")
    if any(p.startswith(homes) for p in (o.exe, o.config)):
        return "# the installation lives under a home folder: readable, never writable\nProtectHome=read-only"
    return "ProtectHome=yes"


_SANDBOX = """\
NoNewPrivileges=yes
ProtectSystem=strict
{protect_home}
PrivateTmp=yes
PrivateMounts=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictSUIDSGID=yes
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RemoveIPC=yes
UMask=0077
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
# not set on purpose: MemoryDenyWriteExecute (cffi audio callbacks and CUDA need W+X pages),
# ProcSubset=pid (ONNX Runtime reads /proc/cpuinfo), PrivateUsers (breaks device groups)"""

_DAEMON = """\
# perceptd: streaming edge perception daemon (rendered by `perceptd install-service`).
# Limits: `systemctl edit perceptd` and override MemoryMax=/CPUQuota= in the drop-in.
[Unit]
Description=perceptd streaming edge perception daemon
Wants=network-online.target
After=network-online.target sound.target
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
# READY=1 once the bundle is loaded and warmed up and every source is open or degraded;
# WATCHDOG=1 only while every pipeline stage's heartbeat is fresh.
Type=notify
NotifyAccess=main
ExecStart={exe} run -c {config}
# SIGHUP: verify and hot-swap the current bundle (and re-read live config sections)
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s
TimeoutStartSec=180s
TimeoutStopSec=20s
WatchdogSec={watchdog_s}s
{identity}
SupplementaryGroups=video audio
StateDirectory=perceptd
StateDirectoryMode=0750
ConfigurationDirectory=perceptd
WorkingDirectory={state_dir}
Environment=HOME={state_dir} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
MemoryMax={memory_max}
CPUQuota={cpu_quota}
TasksMax=512
{sandbox}
# cameras, sound cards and NVIDIA GPUs only (classes that do not exist are skipped)
DevicePolicy=closed
DeviceAllow=char-video4linux rw
DeviceAllow=char-alsa rw
DeviceAllow=char-nvidia-frontend rw
DeviceAllow=char-nvidia-uvm rw
DeviceAllow=char-nvidia-caps rw
# AF_NETLINK: interface lookup when binding tcp://<interface>:PORT
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
WantedBy=multi-user.target
"""

_RETRAIN = """\
# perceptd-retrain: fine-tune on logged samples, export, gate, promote (rendered by
# `perceptd install-service`); started by perceptd-retrain.timer.
[Unit]
Description=perceptd fine-tune, gate and promote of the model bundle
After=perceptd.service

[Service]
Type=oneshot
ExecStart={exe} retrain --promote -c {config}
# 3: the gate refused the candidate (kept aside), 4: not enough labelled samples yet;
# neither is a failure of the nightly job
SuccessExitStatus=3 4
# the running daemon verifies and hot-swaps to the promoted bundle (no-op when none was)
ExecStartPost=+/bin/systemctl try-reload-or-restart perceptd.service
TimeoutStartSec=6h
{identity}
StateDirectory=perceptd
StateDirectoryMode=0750
ConfigurationDirectory=perceptd
WorkingDirectory={state_dir}
Environment=HOME={state_dir} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# lowest priority: the daemon keeps its CPU and disk
Nice=19
CPUSchedulingPolicy=idle
IOSchedulingClass=idle
IOSchedulingPriority=7
MemoryMax=6G
{sandbox}
PrivateDevices=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
"""

_TIMER = """\
# perceptd-retrain.timer: nightly retraining (rendered by `perceptd install-service`).
[Unit]
Description=nightly perceptd retrain

[Timer]
OnCalendar={retrain_at}
# catch up after the device was off at that time; spread a fleet over an hour
Persistent=true
RandomizedDelaySec=1h
AccuracySec=1min

[Install]
WantedBy=timers.target
"""


def render_units(o: ServiceOptions | None = None) -> dict[str, str]:
    """File name -> unit text."""
    o = o or ServiceOptions()
    o.check()
    values = {**o.__dict__, "identity": _identity(o), "state_dir": STATE_DIR,
              "sandbox": _SANDBOX.format(protect_home=_protect_home(o))}
    return {
        "perceptd.service": _DAEMON.format(**values),
        "perceptd-retrain.service": _RETRAIN.format(**values),
        "perceptd-retrain.timer": _TIMER.format(**values),
    }


def default_exe() -> str:
    """The perceptd console script of the running installation (e.g. a venv's bin/)."""
    found = shutil.which("perceptd")
    if found:
        return str(Path(found).absolute())
    candidate = Path(sys.executable).with_name("perceptd")
    return str(candidate) if candidate.exists() else DEFAULT_EXE


def install_units(units: dict[str, str], prefix: Path) -> list[Path]:
    target = prefix / UNIT_DIR
    if prefix == Path("/") and os.geteuid() != 0:
        raise UserError(f"writing {target} needs root (or use --prefix DIR / --dry-run)")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in units.items():
        path = target / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(path)
        written.append(path)
    return written


NEXT_STEPS = """\
next steps:
  install -d -m 0755 /etc/perceptd && cp config.yaml /etc/perceptd/config.yaml
      (set bundle.dir: {state}/bundle; copy the bundle there: cp -a bundle {state}/)
  perceptd keys generate {state}/keys   # optional: CURVE (set security.curve: true)
  systemctl daemon-reload
  systemctl enable --now perceptd.service perceptd-retrain.timer
  systemctl status perceptd; curl -s 127.0.0.1:9460/healthz"""


def install_main(args) -> int:
    opts = ServiceOptions(
        exe=args.exe or default_exe(), config=args.config_path, user=args.user,
        memory_max=args.memory_max, cpu_quota=args.cpu_quota, watchdog_s=args.watchdog_sec,
        retrain_at=args.retrain_at,
    )
    units = render_units(opts)
    if args.dry_run:
        for name, text in units.items():
            print(f"# ---- {name}\n{text}")
        return 0
    for path in install_units(units, Path(args.prefix)):
        print(f"wrote {path}")
    print(NEXT_STEPS.format(state=STATE_DIR))
    return 0
