"""The design card's utils.py: the helpers every script needs, re-exported from the package (kowhisper.common), where
they live. Nothing in kowhisper imports this file."""

from kowhisper.common.cpu import cpu_flags, cpu_has_native_bf16, cpu_model_name
from kowhisper.common.files import (
    PARTIAL_SUFFIX,
    atomic_copy,
    atomic_write_json,
    atomic_write_text,
    describe_os_error,
    human_size,
    partial_path,
    read_json,
    sha256_file,
)
from kowhisper.common.runtime import force_offline, package_versions, quiet_telemetry, setup_logging

__all__ = ["PARTIAL_SUFFIX", "atomic_copy", "atomic_write_json", "atomic_write_text", "cpu_flags", "cpu_has_native_bf16",
           "cpu_model_name", "describe_os_error", "force_offline", "human_size", "package_versions", "partial_path",
           "quiet_telemetry", "read_json", "setup_logging", "sha256_file"]
