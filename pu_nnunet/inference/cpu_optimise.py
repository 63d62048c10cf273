"""``pu-nnunet predict --cpu-optimise``: PyTorch's inference options for the forward pass on a CPU.

Opt-in. On the benchmark's network (``benchmarks/bench_predict_forward.py``, RESULTS.md
"Prediction") only inductor with freezing was clearly faster than eager float32 on a quiet
machine (1.44x), and it changes the logits' last bits (a voxel where two classes tie can flip,
so agreement Dice 1.0 with nnU-Net is not guaranteed) and takes 20-150 s to compile per run;
freeze gave eager's logits bit for bit but no reliable gain (0.93-1.03x), channels-last was
slower and changes the last bits too:

- ``channels-last``: network and input in ``torch.channels_last`` (oneDNN's preferred layout;
  the sums run in another order);
- ``freeze``: ``torch.jit.trace``, ``torch.jit.freeze`` and ``torch.jit.optimize_for_inference``
  (weights folded into the graph, oneDNN's layouts and conv fusions), one graph per fold,
  traced on the first batch (later batch sizes run the same graph); building it took 9-16 s per
  fold on the benchmark's network; deprecated by PyTorch in favour of torch.compile;
- ``compile``: ``torch.compile`` with inductor (C++ kernels; needs a C++ compiler); with one
  fold, inductor's freezing (weights as constants, convolutions prepacked for oneDNN): 1.44x
  eager on a quiet machine, 72 % of the float32 matmul roof, onnxruntime's level; with several
  folds the weights stay graph inputs so that switching folds stays a ``load_state_dict`` (no
  gain measured then). The first batch shape compiles (20-150 s on 2 cores), a second one once
  more into a graph of dynamic batch size (dynamo's automatic dynamic shapes; that graph's
  speed is unmeasured), so it pays only on long runs.

Where an option cannot be applied (no C++ compiler for inductor, tracing or compiling fails) the
prediction falls back to the eager network and logs why, once. The setting is recorded in the
model record (``predict.prediction_settings``), since it can change a voxel.
"""

from __future__ import annotations

import logging
import shutil
import warnings

import torch

from pu_nnunet.inference.errors import PredictionError

logger = logging.getLogger(__name__)

CPU_OPTIMISATIONS = ("none", "channels-last", "freeze", "compile")
# the optimised forms' logits must agree with eager's on the first batch of each fold and shape
# to within the ONNX export's check (onnx_export.LOGIT_ATOL / LOGIT_RTOL): float32 summed in
# another order differs by ~3e-5 on the benchmark's network, wrong weights by whole units
CHECK_ATOL = CHECK_RTOL = 1e-3


def check_cpu_optimisation(option: str, device: torch.device, backend: str) -> None:
    """Refuses an unknown option, or one given where the forward pass is not PyTorch's on a CPU."""
    if option not in CPU_OPTIMISATIONS:
        raise PredictionError(f"--cpu-optimise must be one of {', '.join(CPU_OPTIMISATIONS)}, got {option!r}")
    if option == "none":
        return
    if device.type != "cpu":
        raise PredictionError(f"--cpu-optimise {option} is for the CPU; on {device.type} leave it out")
    if backend != "torch":
        raise PredictionError(f"--cpu-optimise {option} optimises PyTorch's network; --backend {backend} runs "
                              "its own")


def inductor_compiler_missing() -> str | None:
    """Why inductor cannot build C++ kernels here, or None (it needs the compiler it names)."""
    import torch._inductor.config as inductor_config

    names = inductor_config.cpp.cxx
    names = [name for name in (names if isinstance(names, (tuple, list)) else (names,)) if name]
    if not any(shutil.which(name) for name in names):
        return f"no C++ compiler for torch.compile's CPU kernels (looked for {', '.join(names)})"
    return None


def _layout(dim: int) -> torch.memory_format:
    """Channels-last for a 2d (4-dimensional) or 3d (5-dimensional) network's tensors."""
    return torch.channels_last_3d if dim == 5 else torch.channels_last


class CpuOptimisedNetwork(torch.nn.Module):
    """Stands in for the network inside nnU-Net's predictor (as ``OnnxRuntimeNetwork`` does):
    ``forward`` runs the optimised form of the current fold's network; ``load_state_dict``
    loads the fold's weights into the eager network, as nnU-Net's predictors switch folds.
    A failure to build the optimised form is logged and the eager network used from then on.

    ``folds``: how many folds the predictor switches between; inductor's freezing (weights
    compiled in as constants, about 1.4x faster on the benchmark's network) is used with one
    fold only, since nnU-Net switches folds by loading weights into the same network. The first
    call of each fold and batch shape is checked against the eager network (one eager forward
    each), so stale or miscompiled weights fall back to eager instead of writing a wrong
    segmentation."""

    def __init__(self, network: torch.nn.Module, option: str, folds: int = 1):
        super().__init__()
        if option not in CPU_OPTIMISATIONS[1:]:
            raise ValueError(f"option must be one of {CPU_OPTIMISATIONS[1:]}, got {option!r}")
        self.network = network
        self.option = option
        self.fallback_reason: str | None = None
        # freeze: one frozen graph per fold (its weights are constants), keyed by the state dict
        # object the predictor loads (the same object every time for a fold)
        self._frozen: dict[int, torch.jit.ScriptModule] = {}
        self._fold_key: int | None = None
        self._compiled = None
        self.freezing = option == "compile" and folds == 1
        self._checked: set[tuple] = set()
        if option == "channels-last":
            self.network.to(memory_format=_layout(max(p.dim() for p in network.parameters())))
        elif option == "compile":
            missing = inductor_compiler_missing()
            if missing:
                self._fall_back(missing)
            else:
                self._compiled = torch.compile(self.network, backend="inductor")

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        logger.warning("--cpu-optimise %s not applied, running the eager network: %s", self.option, reason)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._fold_key = id(state_dict)
        return self.network.load_state_dict(state_dict, strict=strict, assign=assign)

    def compute_conv_feature_map_size(self, patch_size):
        return self.network.compute_conv_feature_map_size(patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fallback_reason is not None:
            return self.network(x)
        if self.option == "channels-last":
            # the output goes back to the contiguous layout the sliding window's sums expect
            return self.network(x.contiguous(memory_format=_layout(x.dim()))).contiguous()
        try:
            if self.option == "freeze":
                output = self._frozen_network(x)(x)
            else:
                import torch._inductor.config as inductor_config

                # read when a graph compiles: on the first call of each new input shape
                with inductor_config.patch(freezing=self.freezing):
                    output = self._compiled(x)
        except Exception as error:  # noqa: BLE001 - tracing and inductor raise anything; eager tells
            output = self.network(x)  # a real fault of the network or input raises here
            message = str(error).strip()
            self._fall_back(f"{type(error).__name__}: {message.splitlines()[0][:300] if message else ''}")
            return output
        key = (self._fold_key, tuple(x.shape))
        if key not in self._checked:
            expected = self.network(x)
            if not torch.allclose(output, expected, rtol=CHECK_RTOL, atol=CHECK_ATOL):
                difference = float((output - expected).abs().max())
                self._fall_back(f"its logits differ from the eager network's by up to {difference:.3g} on a batch "
                                f"of shape {list(x.shape)}")
                return expected
            self._checked.add(key)
        return output

    def _frozen_network(self, example: torch.Tensor) -> torch.jit.ScriptModule:
        frozen = self._frozen.get(self._fold_key)
        if frozen is None:
            # traced with gradients off: the PU layer takes its no-graph path, as in inference.
            # Silenced: torch.jit's deprecation notices (the option's docs say it), and the tracer's
            # notes that shape checks (InstanceNorm's) become constants, true for a fixed patch size
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(self.network.eval(), example.clone())
                # optimize_for_inference: oneDNN's layouts and prepacked convolutions; it was the
                # faster of the two frozen forms and gave eager's logits bit for bit
                frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            self._frozen[self._fold_key] = frozen
        return frozen


def use_cpu_optimisation(predictor, option: str) -> None:
    """Puts the optimised network in the predictor's place (nothing for ``none``)."""
    if option == "none":
        return
    network = predictor.network
    plain = getattr(network, "_orig_mod", network)  # nnU-Net compiles it itself under nnUNet_compile
    predictor.network = CpuOptimisedNetwork(plain, option, folds=len(predictor.list_of_parameters))
