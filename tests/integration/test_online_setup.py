"""The online phase end to end: one folder with model, data, toolkit and a manifest the offline box checks."""

import json
import os
import subprocess
import sys

import pytest

from kowhisper.common.workspace import WORKSPACE_FORMAT_VERSION, load_manifest, verify_workspace, workspace_sources
from kowhisper.config import PROJECT_ROOT, load_config


def run_setup(*args, cwd=PROJECT_ROOT):
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "run_online_setup.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def workspace(make_workspace, tiny_model_dir):
    return make_workspace(tiny_model_dir)


def test_manifest_records_files_splits_config_and_versions(workspace):
    manifest = load_manifest(workspace)
    assert manifest["format_version"] == WORKSPACE_FORMAT_VERSION == 2
    assert {"model/model.safetensors", "model/tokenizer.json", "toolkit/config.py", "data/cv/report.json",
            "data/cv/train/dropped.jsonl"} <= set(manifest["files"])
    for name, entry in manifest["files"].items():
        assert (workspace / name).stat().st_size == entry["size"]
        assert len(entry["sha256"]) == 64
    assert set(manifest["splits"]) == {"train", "dev", "test"}
    assert manifest["splits"]["train"]["kept"] == 40
    assert manifest["splits"]["dev"]["kept"] == manifest["splits"]["test"]["kept"] == 10
    [source] = manifest["sources"]
    assert (source["name"], source["weight"], source["dir"]) == ("cv", 1.0, "data/cv")
    assert source["splits"] == manifest["splits"]
    assert source["config"]["data_source"] == "cv" and "weight" not in source["config"]
    assert [(entry["test_source"], entry["train_source"], entry["leaked_rows"]) for entry in manifest["leakage"]] == [("cv", "cv", 0)]
    [only] = workspace_sources(workspace)
    assert (only.name, only.weight, only.dir) == ("cv", 1.0, workspace.resolve() / "data" / "cv")
    assert only.split_dir("train") == workspace.resolve() / "data" / "cv" / "train"
    assert manifest["config"]["language_abbr"] == "ko"
    assert manifest["packages"]["transformers"] == "5.23.0"
    assert verify_workspace(workspace).ok


def test_verify_catches_one_flipped_byte_and_a_missing_file(workspace):
    assert run_setup("--verify", f"workspace={workspace}").returncode == 0
    arrow = sorted((workspace / "data" / "cv" / "train").glob("*.arrow"))[0]
    data = bytearray(arrow.read_bytes())
    data[len(data) // 2] ^= 0x01
    arrow.write_bytes(bytes(data))
    (workspace / "model" / "tokenizer.json").unlink()

    result = run_setup("--verify", f"workspace={workspace}")
    assert result.returncode == 1
    assert f"altered: {arrow.relative_to(workspace).as_posix()}" in result.stdout
    assert "missing: model/tokenizer.json" in result.stdout


def test_verify_inside_a_copied_folder_under_no_network(workspace):
    # The honest air-gap: a network namespace with no interfaces but loopback, as on the offline box.
    result = subprocess.run(["unshare", "-n", sys.executable, str(PROJECT_ROOT / "run_online_setup.py"), "--verify"],
                            cwd=workspace, capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and "unshare" in result.stderr and "Operation not permitted" in result.stderr:
        pytest.skip("unshare -n is not permitted here")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: the workspace matches its manifest" in result.stdout


def test_toolkit_copy_is_enough_to_run_the_offline_scripts(workspace):
    toolkit = workspace / "toolkit"
    for name in ("config.py", "utils.py", "train_offline.py", "kowhisper/families/whisper/features.py", "requirements.txt"):
        assert (toolkit / name).is_file(), name
    result = subprocess.run([sys.executable, "run_online_setup.py", "--verify", "workspace=.."], cwd=toolkit,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_second_run_is_a_no_op(make_workspace, tiny_model_dir):
    from kowhisper.online.setup import build_workspace

    workspace = make_workspace(tiny_model_dir)
    before = {path: path.stat().st_mtime_ns for path in workspace.rglob("*") if path.is_file()}
    config = load_config([f"workspace={workspace}", f"model_name_or_path={tiny_model_dir}", "wheelhouse=false"])
    build_workspace(config)
    after = {path: path.stat().st_mtime_ns for path in workspace.rglob("*") if path.is_file()}
    assert after == before


def test_wheelhouse_downloads_for_the_target_platform(tmp_path):
    from kowhisper.online.setup import build_wheelhouse

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("soxr==1.1.0\n")
    config = load_config([f"workspace={tmp_path / 'ws'}", f"wheelhouse_requirements={requirements}",
                          "wheelhouse_python_version=3.11", "wheelhouse_platform=manylinux_2_28_x86_64"])
    wheelhouse = build_wheelhouse(config)
    wheels = [path.name for path in wheelhouse.glob("*.whl")]
    assert any(name.startswith("soxr-1.1.0-cp311") for name in wheels), wheels
    assert (wheelhouse / "requirements.txt").read_text() == "soxr==1.1.0\n"


def test_real_model_workspace_is_hub_free(make_workspace, real_model_dir):
    workspace = make_workspace(real_model_dir, copy=False)
    generation = json.loads((workspace / "model" / "generation_config.json").read_text())
    assert generation["language"] == "ko" and generation["task"] == "transcribe"
    assert not list((workspace / "model").glob("*.bin")), "weights must be safetensors only"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = ("from transformers import WhisperForConditionalGeneration, WhisperProcessor;"
            f"WhisperProcessor.from_pretrained(r'{workspace / 'model'}');"
            f"WhisperForConditionalGeneration.from_pretrained(r'{workspace / 'model'}')")
    result = subprocess.run(["unshare", "-n", sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


# ---- faults and bad input (issue 17) ---------------------------------------------------------------------------


def setup_command(workspace, model_dir, *overrides):
    return [sys.executable, str(PROJECT_ROOT / "run_online_setup.py"), f"workspace={workspace}", f"model_name_or_path={model_dir}",
            "wheelhouse=false", *overrides]


def private_cache(tmp_path) -> dict:
    """The environment of a setup whose default cache folder ($XDG_CACHE_HOME/kowhisper) is the test's own."""
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}


def files_on_disk(workspace) -> set[str]:
    return {path.relative_to(workspace).as_posix() for path in workspace.rglob("*") if path.is_file()}


def cv_tarball(path):
    import tarfile

    with tarfile.open(path, "w:gz") as archive:
        archive.add(PROJECT_ROOT / "sample_data" / "cv-corpus-ko-sample", arcname="cv-corpus-ko-sample")
    return path


def test_a_kill_9_while_the_model_is_written_leaves_nothing_behind(tiny_model_dir, tmp_path):
    """The setup is killed while it writes the model (the real save of the tiny Whisper); the rerun finishes, removes what
    the killed one left, and the workspace holds exactly the files its manifest lists. A stray file is named by --verify."""
    import signal
    import time

    workspace = tmp_path / "ws"
    command = setup_command(workspace, tiny_model_dir)
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, env=private_cache(tmp_path))
    deadline = time.monotonic() + 300
    staged = []
    while not staged:
        assert process.poll() is None, f"the setup ended before it wrote the model:\n{(tmp_path / 'killed.log').read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no model write within 5 minutes"
        try:  # weights on their way: anywhere but in their final place
            staged = [path for path in workspace.rglob("model.safetensors") if path.parent != workspace / "model"]
        except OSError:  # a folder went away while it was listed
            staged = []
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (workspace / "manifest.json").exists()

    rerun = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, env=private_cache(tmp_path))
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    manifest = load_manifest(workspace)
    outside = sorted(name for name in manifest["files"] if name.split("/", 1)[0] not in ("data", "model", "toolkit"))
    assert outside == [], "the manifest vouches for files of the killed run"
    assert files_on_disk(workspace) - {"manifest.json"} == set(manifest["files"]), "files on disk that the manifest does not list"
    assert "left by an interrupted setup" in rerun.stdout
    verified = run_setup("--verify", f"workspace={workspace}")
    assert verified.returncode == 0 and "not part of the bundle" not in verified.stdout, verified.stdout

    (workspace / "model" / "notes.txt").write_text("mine", encoding="utf-8")
    verified = run_setup("--verify", f"workspace={workspace}")
    assert "not part of the bundle: model/notes.txt" in verified.stdout, verified.stdout


def test_the_workspace_is_what_is_copied_and_the_size_line_is_its_size_on_disk(tiny_model_dir, tmp_path):
    """A Common Voice tarball is extracted into the user's cache folder, not into the workspace; the size the setup prints
    is what `du` says the folder takes, and the README's copy command copies that folder."""
    from kowhisper.common.files import human_size

    workspace = tmp_path / "ws"
    result = subprocess.run(setup_command(workspace, tiny_model_dir, f"data_path={cv_tarball(tmp_path / 'cv-corpus-ko.tar.gz')}"),
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, env=private_cache(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(path.name for path in workspace.iterdir()) == ["data", "manifest.json", "model", "toolkit"]
    assert files_on_disk(workspace) - {"manifest.json"} == set(load_manifest(workspace)["files"])
    assert list((tmp_path / "xdg-cache" / "kowhisper").rglob("cv-corpus-ko-sample/ko/train.tsv")), "the extraction is cached"

    du = subprocess.run(["du", "-s", "--block-size=1", str(workspace)], capture_output=True, text=True, check=True)
    on_disk = human_size(int(du.stdout.split()[0]))
    assert f"total {on_disk} on disk in {len(files_on_disk(workspace))} files" in result.stdout, result.stdout[-1500:]
    copy_line = next(line.strip() for line in result.stdout.splitlines() if line.strip().startswith("cp -r "))
    assert copy_line == f"cp -r {workspace} /media/usb/"
    assert "cp -r workspace /media/usb/" in (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_missing_or_damaged_data_path_stops_the_setup_before_the_model_step(damage, tiny_model_dir, tmp_path):
    tarball = tmp_path / "cv-corpus-ko.tar.gz"
    if damage == "truncated":
        cv_tarball(tarball)
        tarball.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    workspace = tmp_path / "ws"
    result = subprocess.run(setup_command(workspace, tiny_model_dir, f"data_path={tarball}"), cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=600, env=private_cache(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    expected = f"Common Voice release not found: {tarball}" if damage == "missing" else f"{tarball} is damaged or incomplete"
    assert expected in result.stderr, result.stderr[-2000:]
    written = sorted(path.relative_to(workspace).as_posix() for path in workspace.rglob("*")) if workspace.exists() else []
    assert written == [], "the model step ran before the data was checked"
