"""The whisper.cpp export (kowhisper.families.whisper.ggml_export) of the real whisper-base, loaded by whisper.cpp itself
through pywhispercpp and run on real human Korean speech (../shared/data/ko-real-speech, CC BY-NC-SA 4.0, read from
there, never copied): its float16 and q8_0 files must read as well as the CTranslate2 int8 export does.

pywhispercpp is pinned in requirements.txt: without it these tests fail, they do not skip. Its wheel also carries ggml's
own library, against which the numpy quantizers are checked byte for byte.
"""

from __future__ import annotations

import csv
import ctypes
import json
from pathlib import Path

import numpy as np
import pytest

from kowhisper.common.audio import load_audio
from kowhisper.common.text import error_rates
from tests.integration.processes import isolated
from tests.sample_files import REAL_SPEECH_KO, needs_real_speech

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The first test clips: six sentences, read by speakers never in train (about 5 s each).
CLIPS = 6
# "Within a point of CTranslate2 int8": a GGML file may read worse by at most one CER point (measured: f16 12.3%,
# q8_0 11.7%, CT2 int8 14.0% on these clips). Reading better is no failure; the engines decode differently.
MAX_CER_POINTS_WORSE = 0.01

pytestmark = [pytest.mark.real_model, needs_real_speech]


def whisper_cpp_model(path: Path):
    """whisper.cpp loading `path`, greedy Korean, as kowhisper decodes: the comparison is of weights, not of search."""
    try:
        from pywhispercpp.model import Model
    except ImportError:
        pytest.fail("pywhispercpp is not installed: pip install -r requirements.txt (it is pinned there)")
    # pywhispercpp downloads a model it cannot find as a file: the export must be there, or this test would go online.
    assert path.is_file(), f"{path} was not written"
    # One thread: with two on a busy 2-core machine, ggml's spinning thread barriers made each decoder step 30x slower
    # (566 ms against 18 ms, measured). temperature_inc=0 keeps whisper.cpp from falling back to sampling.
    return Model(str(path), n_threads=1, language="ko", temperature_inc=0.0, print_progress=False, print_realtime=False)


@pytest.fixture(scope="module")
def workspace(make_workspace, real_model_dir) -> Path:
    return make_workspace(real_model_dir)


@pytest.fixture(scope="module")
def real_clips() -> list[tuple[Path, str]]:
    with open(REAL_SPEECH_KO / "test.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))[:CLIPS]
    return [(REAL_SPEECH_KO / "clips" / row["path"], row["sentence"]) for row in rows]


@pytest.fixture(scope="module")
def ct2_int8_cer(workspace, real_clips, tmp_path_factory) -> float:
    """What the CTranslate2 int8 export of the base reads on the clips, through the toolkit's own recognizer."""
    from kowhisper.config import load_config
    from kowhisper.families.base import resolve_model
    from kowhisper.families.registry import load_recognizer
    from kowhisper.families.whisper.ct2_export import export_ct2
    from kowhisper.serve.transcribe import transcribe_files

    exported = export_ct2(resolve_model(workspace, "base"), "int8", tmp_path_factory.mktemp("ct2") / "base-ct2-int8")
    recognizer = load_recognizer(resolve_model(workspace, str(exported)), load_config([f"workspace={workspace}"]))
    results = list(transcribe_files(recognizer, [clip for clip, _ in real_clips], batch_size=CLIPS, progress=False))
    assert [problem for *_, problem in results] == [None] * CLIPS
    return error_rates([text for _, text in real_clips], [transcript.text for _, transcript, _ in results])["cer"]


def test_ggml_exports_of_whisper_base_read_real_korean_as_well_as_ct2_int8(workspace, real_clips, ct2_int8_cer, python_executable):
    import subprocess

    from kowhisper.families.export_folders import EXPORT_MARKER

    # The dev check is the next test's; this workspace's dev split is espeak, which zero-shot whisper-base cannot read.
    result = subprocess.run(isolated([python_executable, "inference.py", f"workspace={workspace}", "adapter=base", "--export-ggml",
                                      "export_check=false"]), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    exported = workspace / "exports" / "base-ggml"  # beside the model, as the CTranslate2 export of the base
    assert f"whisper.cpp model: {exported}" in result.stdout
    assert sorted(p.name for p in exported.iterdir()) == sorted(["ggml-model-f16.bin", "ggml-model-q8_0.bin", EXPORT_MARKER])
    assert json.loads((exported / EXPORT_MARKER).read_text(encoding="utf-8"))["quantization"] == "q8_0"
    # q8_0 keeps 34 bytes per 32 weights where f16 keeps 64: the big matrices were quantized.
    assert (exported / "ggml-model-q8_0.bin").stat().st_size < 0.6 * (exported / "ggml-model-f16.bin").stat().st_size

    waveforms = [np.ascontiguousarray(load_audio(clip), dtype=np.float32) for clip, _ in real_clips]
    cers = {}
    for weight_type in ("f16", "q8_0"):
        model = whisper_cpp_model(exported / f"ggml-model-{weight_type}.bin")
        texts = ["".join(segment.text for segment in model.transcribe(waveform)).strip() for waveform in waveforms]
        del model  # freed here, not at interpreter exit, where pywhispercpp's destructor fails
        assert "\ufffd" not in "".join(texts), texts  # whole Hangul syllables: the byte-level vocabulary is right
        cers[weight_type] = error_rates([text for _, text in real_clips], texts)["cer"]
    print(f"\nCER on {CLIPS} real clips: GGML f16 {100 * cers['f16']:.1f}%, GGML q8_0 {100 * cers['q8_0']:.1f}%, "
          f"CTranslate2 int8 {100 * ct2_int8_cer:.1f}%")
    for weight_type, cer in cers.items():
        assert cer <= ct2_int8_cer + MAX_CER_POINTS_WORSE, f"GGML {weight_type} reads worse than CTranslate2 int8: {cers}"


def test_each_ggml_file_is_scored_on_dev_by_whisper_cpp_itself(make_workspace, real_model_dir, python_executable, tmp_path):
    """--export-ggml runs its export check as --export-ct2 does, with whisper.cpp (pywhispercpp) decoding each file on the
    dev split's audio beside the model it came from, with no network: both CERs printed, a record beside each file."""
    import subprocess

    from tests.sample_files import REAL_SPEECH

    workspace = make_workspace(real_model_dir, copy=False, data_path=str(REAL_SPEECH), max_samples=160)
    result = subprocess.run(isolated([python_executable, "inference.py", f"workspace={workspace}", "adapter=base", "--export-ggml",
                                      f"ggml_dir={tmp_path / 'ggml'}", f"export_check_samples={CLIPS}"]),
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert f"Export check: base and ggml-model-f16, ggml-model-q8_0, each on {CLIPS} clips of dev of " in result.stdout
    for weight_type in ("f16", "q8_0"):
        check = json.loads((tmp_path / "ggml" / f"ggml-model-{weight_type}.export_check.json").read_text(encoding="utf-8"))
        assert check["clips"] == CLIPS and check["export"]["backend"] == f"whisper.cpp {weight_type} (pywhispercpp)"
        difference = check["difference"]["cer"]
        assert difference["low"] <= difference["difference"] <= difference["high"]
        assert any(line.strip().startswith(f"ggml-model-{weight_type} (whisper.cpp") and f"{100 * check['export']['cer']:.2f}%" in line
                   for line in lines)
        print(f"\n{weight_type}: dev CER {100 * check['export']['cer']:.2f}% against the source's {100 * check['source']['cer']:.2f}%")
        # whisper-base in whisper.cpp reads real speech as the source does (a few clips: a loose bound).
        assert abs(difference["difference"]) <= 0.05


def test_a_ct2_export_is_refused_with_the_reason(real_ct2_dir, tmp_path):
    from kowhisper.families.base import ModelError, ModelSource
    from kowhisper.families.whisper.ggml_export import export_ggml

    with pytest.raises(ModelError, match="is a CTranslate2 export"):
        export_ggml(ModelSource("ct2", real_ct2_dir, "ct2"), tmp_path / "ggml")
    assert not (tmp_path / "ggml").exists()


def test_ggml_export_never_overwrites_a_folder_it_did_not_write(workspace, tmp_path):
    from kowhisper.families.base import ModelError, resolve_model
    from kowhisper.families.whisper.ggml_export import export_ggml

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ModelError, match="was not written by this toolkit"):
        export_ggml(resolve_model(workspace, "base"), precious, "f16")
    assert [p.name for p in precious.iterdir()] == ["thesis.txt"]
    assert (precious / "thesis.txt").read_text(encoding="utf-8") == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["precious"], "a scratch folder was left behind"


def ggml_library() -> ctypes.CDLL:
    """ggml's base library as pywhispercpp's wheel installs it (beside the package, or renamed by auditwheel)."""
    try:
        import pywhispercpp
    except ImportError:
        pytest.fail("pywhispercpp is not installed: pip install -r requirements.txt (it is pinned there)")
    site = Path(pywhispercpp.__file__).resolve().parents[1]
    found = sorted(site.glob("libggml-base.so*")) + sorted((site / "pywhispercpp.libs").glob("libggml-base*.so*"))
    assert found, f"no libggml-base in {site}"
    library = ctypes.CDLL(str(found[0]))
    library.ggml_quantize_chunk.restype = ctypes.c_size_t
    library.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_void_p]
    return library


@pytest.mark.parametrize("weight_type", ["q8_0", "q5_0"])
def test_numpy_quantizers_write_ggmls_own_blocks(weight_type):
    """Byte for byte what ggml's quantize_chunk (whisper.cpp's quantize tool) writes, on weights of many scales with an
    all-zero block, a block of equal magnitudes of both signs, and values that fall on rounding halves."""
    from kowhisper.families.whisper.ggml_export import GGML_TYPE_Q5_0, GGML_TYPE_Q8_0, quantize_q5_0, quantize_q8_0

    ggml_type, quantize, block_bytes = {"q8_0": (GGML_TYPE_Q8_0, quantize_q8_0, 34),
                                        "q5_0": (GGML_TYPE_Q5_0, quantize_q5_0, 22)}[weight_type]
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((64, 512)) * rng.uniform(1e-3, 0.2, size=(64, 1))).astype(np.float32)
    weights[0, :32] = 0
    weights[1, :32] = 0.5
    weights[1, 5] = -0.5
    weights[2] = np.round(weights[2] * 254 / np.abs(weights[2]).max()) / 254
    ggml_out = np.zeros(weights.size // 32 * block_bytes, dtype=np.uint8)
    written = ggml_library().ggml_quantize_chunk(ggml_type, weights.ctypes.data, ggml_out.ctypes.data, 0, *weights.shape, None)
    assert written == ggml_out.size
    assert quantize(weights.reshape(-1, 32)) == ggml_out.tobytes()
