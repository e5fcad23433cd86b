"""systemd units (verified by systemd-analyze), install-service and keys CLIs, the ops config
sections, and the counters behind /metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from perceptd.daemon.config import ConfigError, parse_config
from perceptd.daemon.health.stats import Histogram, RateMeter
from perceptd.service import ServiceOptions, render_units

REPO = Path(__file__).resolve().parents[2]
needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


def _perceptd_exe() -> str:
    exe = Path(sys.executable).with_name("perceptd")
    return str(exe if exe.exists() else shutil.which("perceptd"))


def _write(units: dict[str, str], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in units.items():
        (folder / name).write_text(text)
        paths.append(folder / name)
    return paths


def _verify(paths: list[Path]) -> None:
    """rc=0 is not enough: typos and bad values only print `file:LINE: ...` warnings."""
    r = subprocess.run(["systemd-analyze", "verify", *map(str, paths)], capture_output=True,
                       text=True, timeout=60)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0, out
    assert not re.search(r":\d+:", out), out
    assert not any(str(p.name) in line for p in paths for line in out.splitlines()), out


@needs_systemd
@pytest.mark.parametrize("opts", [
    ServiceOptions(),
    ServiceOptions(user="perceptd", memory_max="1G", cpu_quota="150%", watchdog_s=10),
    ServiceOptions(config="/home/pi/perceptd/config.yaml"),
], ids=["dynamic-user", "static-user", "under-home"])
def test_rendered_units_verify_clean(tmp_path: Path, opts: ServiceOptions) -> None:
    units = render_units(ServiceOptions(**{**opts.__dict__, "exe": _perceptd_exe()}))
    _verify(_write(units, tmp_path))


def test_repo_units_are_the_rendered_defaults() -> None:
    for name, text in render_units().items():
        assert (REPO / "systemd" / name).read_text() == text, f"systemd/{name} is stale"


def test_units_carry_the_operational_contract() -> None:
    units = render_units()
    svc = units["perceptd.service"]
    for line in ("Type=notify", "WatchdogSec=30s", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "StateDirectory=perceptd",
                 "DeviceAllow=char-video4linux rw", "DeviceAllow=char-alsa rw",
                 "SupplementaryGroups=video audio", "CapabilityBoundingSet=\n", "MemoryMax=2G",
                 "CPUQuota=200%", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
                 "DynamicUser=yes", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in svc, line
    retrain = units["perceptd-retrain.service"]
    for line in ("Type=oneshot", "retrain --promote", "Nice=19", "IOSchedulingClass=idle",
                 "CPUSchedulingPolicy=idle", "User=perceptd"):
        assert line in retrain, line
    timer = units["perceptd-retrain.timer"]
    assert "Persistent=true" in timer and "RandomizedDelaySec=" in timer and "OnCalendar=" in timer
    home = render_units(ServiceOptions(exe="/home/pi/venv/bin/perceptd"))["perceptd.service"]
    assert "ProtectHome=read-only" in home


@needs_systemd
def test_security_exposure_stays_low(tmp_path: Path) -> None:
    paths = _write(render_units(ServiceOptions(exe=_perceptd_exe())), tmp_path)
    for p in paths[:2]:
        r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(p)],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
        assert m, r.stdout[-500:] + r.stderr
        print(f"\n{p.name}: exposure {m.group(1)}")
        assert float(m.group(1)) <= 2.5


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perceptd", *args], capture_output=True,
                          text=True, timeout=60)


def test_install_service_writes_units_and_refuses_bad_values(tmp_path: Path) -> None:
    r = _cli("install-service", "--prefix", str(tmp_path), "--user", "alice", "--cpu-quota", "150%",
             "--exe", "/opt/perceptd/bin/perceptd", "--config", "/etc/perceptd/hub.yaml")
    assert r.returncode == 0, r.stderr
    svc = (tmp_path / "etc/systemd/system/perceptd.service").read_text()
    assert "ExecStart=/opt/perceptd/bin/perceptd run -c /etc/perceptd/hub.yaml" in svc
    assert "User=alice" in svc and "DynamicUser" not in svc and "CPUQuota=150%" in svc
    assert (tmp_path / "etc/systemd/system/perceptd-retrain.timer").exists()
    dry = _cli("install-service", "--dry-run")
    assert dry.returncode == 0 and "Type=notify" in dry.stdout
    bad = _cli("install-service", "--dry-run", "--memory-max", "lots")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --memory-max 'lots'"), bad.stderr


def test_keys_generate_makes_pairs_and_the_allowlist(tmp_path: Path) -> None:
    from perceptd.daemon.security.curve import CurveClient

    keys = tmp_path / "keys"
    r = _cli("keys", "generate", str(keys), "--client", "hub", "--client", "laptop")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == ["hub.key", "laptop.key"]
    assert (keys / "server.key_secret").stat().st_mode & 0o077 == 0
    client = CurveClient.from_files(keys / "hub.key_secret", keys / "server.key")
    assert len(client.public) == 40 and len(client.server_public) == 40
    again = _cli("keys", "generate", str(keys))
    assert again.returncode == 1 and "--force" in again.stderr


def test_config_wide_binds_need_curve_or_allow_insecure() -> None:
    wide = {"publish": {"endpoint": "tcp://0.0.0.0:5560"}, "control": {"endpoint": "tcp://0.0.0.0:5561"}}
    with pytest.raises(ConfigError) as exc:
        parse_config(wide)
    assert any(line.startswith("publish.endpoint") and "allow_insecure" in line for line in exc.value.lines)
    parse_config({**wide, "security": {"curve": True}})  # CURVE permits it
    with pytest.raises(ConfigError, match="http.host"):
        parse_config({"http": {"host": "0.0.0.0"}})
    assert parse_config({"http": {"host": "0.0.0.0", "allow_insecure": True}}).http.port == 9460
    cfg = parse_config({"mqtt": {"enabled": True, "device_id": "hub-1", "password_file": "pw"}},
                       base_dir=Path("/etc/perceptd"))
    assert cfg.mqtt.password_file == Path("/etc/perceptd/pw")
    with pytest.raises(ConfigError, match="mqtt.device_id"):
        parse_config({"mqtt": {"device_id": "a/b"}})


def test_histogram_buckets_and_rate_meter() -> None:
    h = Histogram((0.01, 0.1, 1.0))
    for v in (0.005, 0.01, 0.05, 2.0):
        h.observe(v)
    s = h.snapshot()
    assert s.cumulative == (2, 3, 3, 4) and s.count == 4 and abs(s.sum - 2.065) < 1e-9
    assert s.quantile(0.5) == 0.01 and s.quantile(1.0) is None  # the top one is in +Inf
    r = RateMeter(window_s=10)
    for i in range(30):
        r.sample(i * 1.0, i * 5.0)
    assert abs(r.rate() - 5.0) < 1e-9
