"""The browser demo: upload or record speech, read the transcript and how long it took.

It works with no network: analytics are off (utils.force_offline sets GRADIO_ANALYTICS_ENABLED=False and the
Blocks say so too), the default theme's fonts are served by Gradio itself, and server-side rendering (which
would start a Node server) is off. It binds config.server_name, 127.0.0.1 by default, so only this machine
can reach it; a public share link is made only with share=true.

Bad input gets a sentence in the status line, never a stack trace or an error pop-up: no audio, silence, a
file FFmpeg cannot decode, a recording longer than demo_max_audio_s.
"""

from __future__ import annotations

import logging
import time

from kowhisper.common.audio import SAMPLING_RATE, AudioError, load_audio
from kowhisper.common.transcript import Prompting, is_silent
from kowhisper.config import Config
from kowhisper.families.base import Recognizer

log = logging.getLogger("kowhisper")

NO_AUDIO = "No audio yet: upload a file or record with the microphone, then press Transcribe."
NOT_AUDIO = "This file could not be read as audio. Upload a recording such as wav, mp3, m4a, flac or ogg."
SILENT = "The recording is silent, so there is nothing to transcribe. Check the microphone and try again."
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


def transcribe_for_demo(recognizer: Recognizer, path: str | None, max_seconds: float, batch_size: int = 8,
                        prompting: Prompting | None = None) -> tuple[str, str]:
    """(transcript, status line) for an uploaded or recorded file; bad input gives ("", why). `prompting`: the
    initial prompt and hotwords typed in the page (unset: the configured ones)."""
    if not path:
        return "", NO_AUDIO
    try:
        waveform = load_audio(path)
    except AudioError as error:
        # The decoder's own words (paths, C++ locations) help whoever runs the server, not the visitor.
        log.warning("demo upload rejected: %s", error)
        return "", NOT_AUDIO
    seconds = len(waveform) / SAMPLING_RATE
    if seconds > max_seconds:
        return "", (
            f"This recording is {_clock(seconds)} long; the demo takes up to {_clock(max_seconds)}. "
            "Transcribe long files with `python inference.py workspace=DIR FILE` instead."
        )
    if is_silent(waveform):
        return "", SILENT
    started = time.perf_counter()
    # Past one 30 s window the transcript is shown per segment, with the times it covers.
    long_form = seconds > 30
    transcript = recognizer.transcribe_waveforms([waveform], batch_size=batch_size,
                                                 promptings=None if prompting is None else [prompting])[0]
    taken = time.perf_counter() - started
    if not transcript.text:
        return "", f"No speech was recognised in {seconds:.1f} s of audio (took {taken:.2f} s)."
    text = transcript.text
    if long_form:
        text = "\n".join(f"[{_clock(s.start)}-{_clock(s.end)}] {s.text}" for s in transcript.segments)
    return text, f"Transcribed {seconds:.1f} s of audio in {taken:.2f} s ({recognizer.description})."


def page_prompting(prompt: str | None, hotwords: str | None) -> Prompting:
    """The demo's two text fields as a Prompting: hotwords separated by commas or lines."""
    words = [word for line in (hotwords or "").splitlines() for word in line.split(",")]
    return Prompting().with_file(prompt or "", words)


def build_demo(recognizer: Recognizer, model_label: str, max_seconds: float, batch_size: int = 8,
               prompting: Prompting | None = None):
    # Here, not at the top: gradio takes about 2 s to import, and only --demo needs it.
    import gradio as gr

    prompting = prompting or Prompting()

    def run(path, prompt="", hotwords=""):
        return transcribe_for_demo(recognizer, path, max_seconds, batch_size, page_prompting(prompt, hotwords))

    with gr.Blocks(title="Korean speech to text", analytics_enabled=False) as demo:
        gr.Markdown(f"## Korean speech to text\nModel: **{model_label}**, {recognizer.description}")
        audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Upload a file or record", elem_id="audio")
        # Whisper reads them before the audio; a model that cannot (CTC) gets no fields for them.
        with gr.Row(visible=recognizer.takes_prompts):
            prompt = gr.Textbox(label="Initial prompt (before the first 30 s)", value=prompting.initial_prompt, elem_id="prompt",
                                placeholder="e.g. 고객센터 상담입니다. 요금제, 데이터, 5G.")
            hotwords = gr.Textbox(label="Hotwords (comma-separated)", value=", ".join(prompting.hotwords), elem_id="hotwords",
                                  placeholder="e.g. 카카오뱅크, 홍길동")
        button = gr.Button("Transcribe", variant="primary")
        transcript = gr.Textbox(label="Transcript", lines=4, interactive=False, buttons=["copy"], elem_id="transcript")
        status = gr.Markdown(elem_id="status")
        for event in (audio.upload, audio.stop_recording, button.click):
            event(run, inputs=[audio, prompt, hotwords], outputs=[transcript, status])
        audio.clear(lambda: ("", ""), outputs=[transcript, status])
    return demo


def launch_demo(recognizer: Recognizer, model_label: str, config: Config) -> None:
    """Serve until interrupted, on config.server_name:server_port."""
    demo = build_demo(recognizer, model_label, config.demo_max_audio_s, config.per_device_eval_batch_size,
                      Prompting.from_config(config))
    if config.server_name not in LOOPBACK:
        log.warning("server_name=%s: the demo is reachable by other machines on this network", config.server_name)
    # One request at a time: a second concurrent transcription would only split the same CPU cores.
    demo.queue(default_concurrency_limit=1).launch(
        server_name=config.server_name,
        server_port=config.server_port,
        share=config.share,
        ssr_mode=False,
        show_error=False,
    )
