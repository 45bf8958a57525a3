"""Export networks to ONNX with voxelflow's exporter, then run PyTorch and onnxruntime side by side.

Cases: a freshly initialised U-Net (``build_network("unet")``, exported with
``voxelflow.zoo.export.export_network``) and, when present, the demo zoo entry shipped in the
repository (``zoo/voxelflow-demo-tissue``, exported with ``export_source``, the code behind
``voxelflow export NAME --format onnx``). Both are exported with dynamic batch and spatial
sizes and the logits head. For each case and input shape (the export window and a different
one, to exercise the dynamic sizes) the script reports the largest absolute difference of the
logits and the median milliseconds per forward pass of each runtime, measured in interleaved
repeats (torch, onnxruntime, torch, ...) so that load on a shared machine hits both alike.

Run:  .venv/bin/python benchmarks/export_onnx.py [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("benchmarks.export_onnx")
ENTRY = Path(__file__).resolve().parents[1] / "zoo" / "voxelflow-demo-tissue"


def export_unet(folder: Path) -> tuple[torch.nn.Module, Path, tuple[int, ...]]:
    """A seeded U-Net (1 → 3 channels) exported with dynamic sizes; returns net, file, window."""
    from voxelflow.networks import build_network
    from voxelflow.zoo.export import export_network

    torch.manual_seed(0)
    network = build_network("unet", spatial_dims=3, in_channels=1, out_channels=3).eval()
    window = (64, 64, 64)
    out = export_network(
        network, example_shape=(1, 1, *window), format="onnx", out=folder / "unet.onnx"
    )
    return network, out, window


def export_entry(folder: Path) -> tuple[torch.nn.Module, Path, tuple[int, ...]] | None:
    """The repository's demo zoo entry, exported the way ``voxelflow export`` does."""
    if not (ENTRY / "model.yaml").is_file():
        logger.warning("no zoo entry at %s: skipping it", ENTRY)
        return None
    from voxelflow.zoo.export import export_source
    from voxelflow.zoo.network import network_from_entry

    network, experiment, _ = network_from_entry(ENTRY)
    out = export_source(ENTRY, format="onnx", out=folder / "demo_entry.onnx")
    return network.eval(), out, tuple(experiment.inference.window or experiment.sampling.window)


def compare(
    network: torch.nn.Module, path: Path, shape: tuple[int, ...], repeats: int, threads: int
) -> dict[str, float]:
    """Max |Δ| of the logits and median ms per forward of torch and onnxruntime."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    image = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = network(image).numpy()
    produced = session.run(None, {"image": image.numpy()})[0]  # also the warm-up
    torch_ms, onnx_ms = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            network(image)
        torch_ms.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        session.run(None, {"image": image.numpy()})
        onnx_ms.append(1000 * (time.perf_counter() - start))
    return {
        "max_abs_diff": float(np.abs(produced - expected).max()),
        "logit_range": float(expected.max() - expected.min()),
        "torch_ms": float(np.median(torch_ms)),
        "onnx_ms": float(np.median(onnx_ms)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="threads for both runtimes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    header = f"{'model':<12}{'input':<22}{'max |Δ| logits':>16}{'torch ms':>10}{'onnx ms':>10}"
    lines = [header, "-" * len(header)]
    with tempfile.TemporaryDirectory() as folder:
        cases = [("unet", export_unet(Path(folder))), ("demo entry", export_entry(Path(folder)))]
        for name, case in cases:
            if case is None:
                continue
            network, path, window = case
            other = (*(max(16, size - 16) for size in window[:-1]), window[-1])
            for spatial in (window, other):
                shape = (1, 1, *spatial)
                figures = compare(network, path, shape, args.repeats, args.threads)
                lines.append(
                    f"{name:<12}{shape!s:<22}{figures['max_abs_diff']:>16.2e}"
                    f"{figures['torch_ms']:>10.1f}{figures['onnx_ms']:>10.1f}"
                )
    logger.info("\n".join(lines))


if __name__ == "__main__":
    main()
