"""MultiEmbedTR rebuilt from stock transformers classes, without ``trust_remote_code``.

Reads a MultiEmbedTR directory (config.json + model.safetensors or pytorch_model.bin) and the
text/vision model folders its config names (configs, tokenizer, image processor): folders beside
config.json, or Hub repos, whose configs and tokenizer files (never weights) are downloaded at a
pinned commit when one is given (``resolve_component``). Writes nothing but the Hub cache.

The architecture (from ../shared/reference/MULTIEMBEDTR.md):
- text:  normalize(text_proj(masked_mean(ModernBERT(last_hidden_state), attention_mask)))
- image: normalize(image_proj(DINOv2(last_hidden_state)[:, 0]))   (the CLS token)
- each head: Linear(d -> 2d) -> GELU -> Dropout -> Linear(2d -> d), + input (residual), LayerNorm.

The checkpoint was saved with transformers 4.5x module names; ``map_checkpoint_keys`` renames them
to the installed transformers' names, and ``check_state_dict`` refuses any missing, unexpected or
mis-shaped tensor by name instead of loading with ``strict=False`` and hoping.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, Dinov2Model, ModernBertModel

from .manifest import COMPONENT_FILES, is_hub_id, snapshot_commit
from .manifest import MULTIEMBEDTR_TYPE as MODEL_TYPE  # (publish-space reads it without torch)

TEXT_MAX_LENGTH = 128  # MultiEmbedTR was trained with max_length 128
SAFETENSORS_FILE = "model.safetensors"
PICKLE_FILE = "pytorch_model.bin"

# transformers 4.5x -> 5.x renames inside DINOv2's attention block. Applied only when the
# installed Dinov2Model really uses the new names, so the loader works on both major versions.
_DINOV2_RENAMES = (
    (re.compile(r"\.attention\.attention\.query\."), ".attention.q_proj."),
    (re.compile(r"\.attention\.attention\.key\."), ".attention.k_proj."),
    (re.compile(r"\.attention\.attention\.value\."), ".attention.v_proj."),
    (re.compile(r"\.attention\.output\.dense\."), ".attention.o_proj."),
)


class CheckpointError(ValueError):
    """A checkpoint does not match the architecture its config describes."""


@dataclass(frozen=True)
class MultiEmbedTRConfig:
    """The fields of MultiEmbedTR's config.json that the loader needs."""

    text_model_name: str
    vision_model_name: str
    embed_dim: int = 768
    dropout: float = 0.4

    @classmethod
    def from_file(cls, path: Path) -> MultiEmbedTRConfig:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("model_type") != MODEL_TYPE:
            raise CheckpointError(
                f"{path}: model_type is {data.get('model_type')!r}, expected {MODEL_TYPE!r}"
            )
        missing = [k for k in ("text_model_name", "vision_model_name") if not data.get(k)]
        if missing:
            raise CheckpointError(f"{path}: config.json lacks {', '.join(missing)}")
        # MultiEmbedTR's text embedding is the masked mean (its config says true); the author's
        # code takes the CLS token when it is false, which this module does not implement.
        if data.get("use_mean_pooling_for_text", True) is not True:
            raise CheckpointError(
                f"{path}: use_mean_pooling_for_text is "
                f"{data['use_mean_pooling_for_text']!r}; this loader implements mean pooling only"
            )
        return cls(
            text_model_name=data["text_model_name"],
            vision_model_name=data["vision_model_name"],
            embed_dim=int(data.get("embed_dim", data.get("projection_dim", cls.embed_dim))),
            dropout=float(data.get("dropout", cls.dropout)),
        )


class ProjectionHead(nn.Module):
    """Linear -> GELU -> Dropout -> Linear, plus the input when shapes allow, then LayerNorm."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, 2 * out_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(2 * out_dim, out_dim),
        )
        self.ln = nn.LayerNorm(out_dim)
        self.residual = in_dim == out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if self.residual:
            y = y + x
        return self.ln(y)


class MultiEmbedTR(nn.Module):
    """The two encoders and their heads, with MultiEmbedTR's module names (so keys line up)."""

    def __init__(self, text_config, vision_config, config: MultiEmbedTRConfig):
        super().__init__()
        self.text_encoder = ModernBertModel(text_config)
        self.vision_encoder = Dinov2Model(vision_config)
        self.text_proj = ProjectionHead(text_config.hidden_size, config.embed_dim, config.dropout)
        self.image_proj = ProjectionHead(
            vision_config.hidden_size, config.embed_dim, config.dropout
        )
        self.logit_scale = nn.Parameter(torch.tensor(0.0))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.text_encoder(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        # Masked mean pooling: padding positions must not dilute the average. In float32:
        # a sum over 128 positions can overflow float16 (max 65504) and loses bits in bf16.
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        # Heads run in float32 whatever the encoder dtype: they are cheap and this keeps
        # reduced-precision encoders within cosine 0.999 of the float32 model.
        return nn.functional.normalize(self.text_proj(pooled), dim=-1)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.vision_encoder(pixel_values=pixel_values).last_hidden_state
        return nn.functional.normalize(self.image_proj(hidden[:, 0].float()), dim=-1)


def map_checkpoint_keys(state_dict: dict, target_keys: set[str]) -> dict:
    """Rename transformers-4.5x DINOv2 keys to the installed names where those differ."""
    mapped = {}
    for key, tensor in state_dict.items():
        new_key = key
        if key.startswith("vision_encoder.") and key not in target_keys:
            for pattern, replacement in _DINOV2_RENAMES:
                new_key = pattern.sub(replacement, new_key)
        if new_key in mapped:  # an old and a new name of one tensor: which one is meant?
            raise CheckpointError(
                f"the checkpoint holds {new_key} twice (once under an older transformers name); "
                "keep one of them"
            )
        mapped[new_key] = tensor
    return mapped


def check_state_dict(state_dict: dict, model: nn.Module, source: str) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    )
    problems = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("mis-shaped", misshaped),
    ):
        if items:
            shown = "\n    ".join(items[:20])
            more = f"\n    ... and {len(items) - 20} more" if len(items) > 20 else ""
            problems.append(f"  {len(items)} {label} tensor(s):\n    {shown}{more}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the MultiEmbedTR architecture its config describes:\n"
            + "\n".join(problems)
        )


def read_state_dict(model_dir: Path) -> tuple[dict, Path]:
    """Read the checkpoint tensors, preferring safetensors; pickles only with weights_only."""
    safetensors_path = model_dir / SAFETENSORS_FILE
    pickle_path = model_dir / PICKLE_FILE
    if safetensors_path.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(safetensors_path)), safetensors_path
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{safetensors_path}: unreadable safetensors ({err})") from None
    if pickle_path.is_file():
        try:
            # weights_only=True: a pickle can run arbitrary code; this refuses anything but
            # tensors and plain containers.
            loaded = torch.load(str(pickle_path), map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(
                f"{pickle_path}: refused or unreadable ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). Only plain tensor state "
                "dicts are loaded (torch.load weights_only=True)."
            ) from None
        if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, dict) or not all(
            isinstance(v, torch.Tensor) for v in loaded.values()
        ):
            raise CheckpointError(f"{pickle_path}: not a state dict of tensors")
        return loaded, pickle_path
    raise CheckpointError(f"{model_dir} holds neither {SAFETENSORS_FILE} nor {PICKLE_FILE}")


def fingerprint_state_dict(state_dict: dict) -> str:
    """sha256 over names, dtypes, shapes and bytes of every tensor, in sorted key order.

    Hashes the tensors as they were read (before renaming or casting), so the fingerprint is a
    property of the weights, the same on any transformers version or device.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def resolve_component(
    name: str, model_dir: Path, revision: str | None = None
) -> tuple[str, str | None]:
    """(a local folder, the Hub commit it holds or None) for a component named in config.json:
    a folder beside the checkpoint or any other folder path, else a Hub id (namespace/name; a
    bare name is a folder that is missing), fetched at ``revision`` (None: its main branch).
    The commit is what a build records, so that queries are tokenised by the same tokenizer
    files however the component's repo changes later."""
    for folder in (model_dir / name, Path(name)):  # beside config.json, or any other path
        if folder.is_dir():
            return str(folder), None
    beside = model_dir / name
    if not is_hub_id(name):
        raise CheckpointError(
            f"{model_dir}: config.json names the component {name!r}, but there is no folder "
            f"{beside}; copy the model folder whole"
        )
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(name, revision=revision, allow_patterns=list(COMPONENT_FILES)))
    return str(folder), snapshot_commit(folder, revision)


def build_model(
    model_dir: Path, config: MultiEmbedTRConfig, text_dir: str, vision_dir: str
) -> tuple[MultiEmbedTR, str]:
    """Build the model from its configs (the folders ``resolve_component`` gave), load the
    checkpoint strictly; return it and its hash."""
    text_config = AutoConfig.from_pretrained(text_dir)
    vision_config = AutoConfig.from_pretrained(vision_dir)
    for component, cfg, expected in (
        ("text", text_config, "modernbert"),
        ("vision", vision_config, "dinov2"),
    ):
        if cfg.model_type != expected:
            raise CheckpointError(
                f"{model_dir}: the {component} model is a {cfg.model_type!r}, expected {expected!r}"
            )
    # Weights come from the checkpoint, so skip the random initialisation (seconds at full size).
    with _no_init_weights():
        model = MultiEmbedTR(text_config, vision_config, config)
    state_dict, path = read_state_dict(model_dir)
    fingerprint = fingerprint_state_dict(state_dict)
    mapped = map_checkpoint_keys(state_dict, set(model.state_dict()))
    check_state_dict(mapped, model, str(path))
    model.load_state_dict(mapped, strict=True)
    model.eval()
    return model, fingerprint


def _no_init_weights():
    """transformers' switch that skips random initialisation (its home moved in 5.x)."""
    try:
        from transformers.initialization import no_init_weights  # transformers >= 5
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights  # transformers 4.x
        except ImportError:  # pragma: no cover - neither: initialise, slower but correct
            import contextlib

            return contextlib.nullcontext()
    return no_init_weights()
