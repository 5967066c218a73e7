"""The Gradio demo, started as users start it (`inference.py workspace=DIR --demo`) and driven in headless
Chromium through Playwright: a clip uploaded or spoken into the microphone shows its transcript and the time
taken; a file that is not audio, a silent recording and one over the demo's limit show a message instead. The
server must listen on loopback only."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from test_inference import PROJECT_ROOT, add_reciting_run, reference_clips, write_wav

from kowhisper.common.audio import SAMPLING_RATE, load_audio
from kowhisper.common.text import error_rates
from kowhisper.serve.demo import NOT_AUDIO, SILENT

pytestmark = [pytest.mark.browser, pytest.mark.real_model]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
STARTUP_SECONDS = 300
TRANSCRIBE_MS = 120_000
DEMO_MAX_AUDIO_S = 60  # low enough that a test recording can pass it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def outward_address() -> str | None:
    """This machine's address on its network, if it has one (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def demo(make_workspace, real_model_dir, python_executable, tmp_path_factory):
    """(url, port, workspace) of a running demo serving the reciting adapter; stopped after the module."""
    workspace = make_workspace(real_model_dir)
    add_reciting_run(workspace, tmp_path_factory.mktemp("adapters"))
    port = free_port()
    log_path = tmp_path_factory.mktemp("demo") / "demo.log"
    with open(log_path, "w", encoding="utf-8") as log:
        server = subprocess.Popen([python_executable, "inference.py", f"workspace={workspace}", "--demo", f"server_port={port}",
                                   f"demo_max_audio_s={DEMO_MAX_AUDIO_S}"],
                                  cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if server.poll() is not None:
                pytest.fail(f"the demo exited with {server.returncode}:\n{log_path.read_text(encoding='utf-8')}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the demo did not answer within {STARTUP_SECONDS} s:\n{log_path.read_text(encoding='utf-8')}")
            time.sleep(1)
        yield url, port, workspace
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="module")
def browser(playwright):
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser, demo):
    page = browser.new_page()
    page.goto(demo[0])
    page.locator("#audio input[type=file]").wait_for(state="attached")
    yield page
    page.close()


def test_uploaded_clip_shows_its_transcript(page, demo):
    from playwright.sync_api import expect

    clip, sentence = reference_clips(demo[2], 1)[0]
    page.locator("#audio input[type=file]").set_input_files(str(clip))
    expect(page.locator("#transcript textarea")).to_have_value(sentence, timeout=TRANSCRIBE_MS)
    expect(page.locator("#status")).to_contain_text("Transcribed", timeout=TRANSCRIBE_MS)
    expect(page.locator("#status")).to_contain_text("s of audio in")


def test_a_prompt_and_hotwords_typed_in_the_page_reach_the_model_but_not_the_transcript(page, demo):
    from playwright.sync_api import expect

    clip, sentence = reference_clips(demo[2], 1)[0]
    page.locator("#prompt textarea").fill("회의록: 분기 매출과 물류 일정.")
    page.locator("#hotwords textarea").fill("카카오뱅크, 넷플릭스")
    page.locator("#audio input[type=file]").set_input_files(str(clip))
    expect(page.locator("#status")).to_contain_text("Transcribed", timeout=TRANSCRIBE_MS)
    transcript = page.locator("#transcript textarea").input_value()
    assert transcript and not any(word in transcript for word in ("회의록", "물류", "카카오뱅크", "넷플릭스"))
    assert transcript == sentence, "the reciting adapter still recites its sentence with text before it"


def test_microphone_recording_shows_its_transcript(playwright, demo, tmp_path):
    """Chromium's fake capture device plays a clip into the microphone once; the demo transcribes what the
    browser recorded (resampled, processed and Opus-encoded by the browser, so close to, not equal to, the clip)."""
    from playwright.sync_api import expect

    clip, sentence = reference_clips(demo[2], 1)[0]
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(clip), "-ar", "48000", "-ac", "1", str(tmp_path / "spoken.wav")], check=True)
    fake_microphone = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                       f"--use-file-for-fake-audio-capture={tmp_path / 'spoken.wav'}%noloop"]
    speech_ms = int(1000 * len(load_audio(clip)) / SAMPLING_RATE)
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + fake_microphone)
    try:
        page = browser.new_context(permissions=["microphone"]).new_page()
        page.goto(demo[0])
        page.get_by_role("button", name="Record audio").click()
        page.locator("#audio button:visible", has_text="Record").first.click()
        page.wait_for_timeout(speech_ms + 1500)
        page.locator("#audio button:visible", has_text="Stop").first.click()
        expect(page.locator("#status")).to_contain_text("Transcribed", timeout=TRANSCRIBE_MS)
        transcript = page.locator("#transcript textarea").input_value()
    finally:
        browser.close()
    assert error_rates([sentence], [transcript])["cer"] <= 0.2, f"recorded {sentence!r}, transcribed {transcript!r}"


def test_recording_over_the_limit_gets_a_message(page, demo, tmp_path):
    from playwright.sync_api import expect

    clip, _ = reference_clips(demo[2], 1)[0]
    speech = load_audio(clip)
    too_long = write_wav(tmp_path / "lecture.wav", np.resize(speech, (DEMO_MAX_AUDIO_S + 10) * SAMPLING_RATE))
    page.locator("#audio input[type=file]").set_input_files(str(too_long))
    expect(page.locator("#status")).to_contain_text("This recording is 1:10 long; the demo takes up to 1:00", timeout=TRANSCRIBE_MS)
    expect(page.locator("#transcript textarea")).to_have_value("")


def test_file_that_is_not_audio_gets_a_message(page, tmp_path):
    from playwright.sync_api import expect

    impostor = tmp_path / "minutes.wav"
    impostor.write_text("meeting minutes, not a recording", encoding="utf-8")
    page.locator("#audio input[type=file]").set_input_files(str(impostor))
    expect(page.locator("#status")).to_have_text(NOT_AUDIO, timeout=TRANSCRIBE_MS)
    expect(page.locator("#transcript textarea")).to_have_value("")


def test_silent_recording_gets_a_message(page, tmp_path):
    from playwright.sync_api import expect

    silence = write_wav(tmp_path / "silence.wav", np.zeros(3 * SAMPLING_RATE, dtype=np.float32))
    page.locator("#audio input[type=file]").set_input_files(str(silence))
    expect(page.locator("#status")).to_have_text(SILENT, timeout=TRANSCRIBE_MS)


def test_pressing_transcribe_with_no_audio_explains_what_to_do(page):
    from playwright.sync_api import expect

    page.get_by_role("button", name="Transcribe").click()
    expect(page.locator("#status")).to_contain_text("No audio yet", timeout=TRANSCRIBE_MS)


def test_demo_listens_on_loopback_only(demo):
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to try")
    with pytest.raises(OSError):
        socket.create_connection((address, demo[1]), timeout=5).close()


def test_demo_page_asks_nothing_from_the_internet(browser, demo):
    """Everything the page loads comes from the demo server itself, so it works on an air-gapped box."""
    page = browser.new_page()
    outside: list[str] = []
    page.on("request", lambda request: outside.append(request.url) if not request.url.startswith(demo[0]) else None)
    page.goto(demo[0])
    page.locator("#audio input[type=file]").wait_for(state="attached")
    page.wait_for_load_state("networkidle")
    page.close()
    assert [url for url in outside if not url.startswith(("data:", "blob:"))] == []

