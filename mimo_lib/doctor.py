"""Environment check: ``python -m mimo_lib.doctor`` (or ``mimo-doctor``).

Prints the versions that matter, the compute device found, the thread policy
(``mimo_lib.threads``), and one OK/FAIL line per requirement. Paste its output into any bug report. Exits with 1 if
anything failed.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import platform
import sys
import warnings
from collections.abc import Callable

from packaging.requirements import Requirement

# The distributions whose versions a bug report needs first.
KEY_PACKAGES = ("torch", "torchaudio", "torchvision", "megatron-core", "av", "numpy")


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def requirement_checks(extras: tuple[str, ...] = ()) -> list[tuple[str, bool, str]]:
    """``(name, ok, detail)`` for each requirement of mimo-lib (and the given extras)."""
    results = []
    for text in metadata.requires("mimo-lib") or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in ("",) + extras
        ):
            continue
        version = installed_version(requirement.name)
        if version is None:
            results.append((requirement.name, False, f"not installed (need {requirement.specifier or 'any'})"))
        elif requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            results.append((requirement.name, False, f"{version} installed, need {requirement.specifier}"))
        else:
            results.append((requirement.name, True, f"{version} ({requirement.specifier or 'any version'})"))
    return results


def _check_torch() -> str:
    import torch

    x = torch.randn(64, 64)
    if not torch.isfinite(x @ x).all():
        raise RuntimeError("matrix multiply gave non-finite values")
    return "tensor maths runs"


def _check_torchaudio() -> str:
    import torch
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16_000, n_fft=400, hop_length=160, n_mels=80)
    out = mel(torch.zeros(16_000))
    return f"MelSpectrogram ok {tuple(out.shape)}"


def _check_torchvision() -> str:
    import torch
    from torchvision.transforms.v2 import functional as F

    out = F.resize(torch.zeros(3, 8, 8, dtype=torch.uint8), [4, 4], antialias=True)
    return f"transforms.v2 ok {tuple(out.shape)}"


def _check_av() -> str:
    import av

    missing = [codec for codec in ("libx264", "aac", "flac") if codec not in av.codecs_available]
    if missing:
        raise RuntimeError(f"PyAV's FFmpeg lacks encoders {missing}")
    return "FFmpeg bundled with encoders libx264, aac, flac"


def _check_megatron() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        importlib.import_module("megatron.core")
        from megatron.core.transformer import TransformerConfig  # noqa: F401
    return "megatron.core imports"


FUNCTIONAL_CHECKS: dict[str, Callable[[], str]] = {
    "torch works": _check_torch,
    "torchaudio works": _check_torchaudio,
    "torchvision works": _check_torchvision,
    "PyAV encodes mp4": _check_av,
    "megatron-core imports": _check_megatron,
}


def describe_device() -> str:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return f"cuda ({torch.cuda.device_count()} GPU: {names})"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads); no GPU found — every chapter runs on the CPU"


def main(argv: list[str] | None = None) -> int:
    import mimo_lib
    from mimo_lib.threads import apply_thread_policy, describe_thread_policy

    print(f"mimo_lib {mimo_lib.__version__} | Python {platform.python_version()} | {platform.platform()}")
    print("versions: " + ", ".join(f"{name} {installed_version(name) or 'MISSING'}" for name in KEY_PACKAGES))
    failures = 0
    try:
        print(f"device: {describe_device()}")
    except Exception as error:  # a broken torch install must not hide the rest of the report
        print(f"device: unknown ({error})")
    try:
        apply_thread_policy()
        print(f"threads: {describe_thread_policy()}")
    except Exception as error:  # e.g. a malformed MIMO_NUM_THREADS: report it, keep going
        failures += 1
        print(f"[FAIL] thread policy: {type(error).__name__}: {error}")
    for name, ok, detail in requirement_checks():
        failures += not ok
        print(f"[{'OK' if ok else 'FAIL'}] {name}: {detail}")
    for name, check in FUNCTIONAL_CHECKS.items():
        try:
            print(f"[OK] {name}: {check()}")
        except Exception as error:
            failures += 1
            print(f"[FAIL] {name}: {type(error).__name__}: {error}")
    print("all checks passed" if failures == 0 else f"{failures} check(s) failed")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
