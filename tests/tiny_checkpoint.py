"""Write a tiny random-weight MultiEmbedTR checkpoint in the real on-disk format.

Writes, under the output folder:
- config.json: MultiEmbedTR's fields (model_type multimodal_embedder, text_model_name,
  vision_model_name, embed_dim, auto_map, transformers_version 4.53.0, ...);
- pytorch_model.bin and/or model.safetensors: the state dict with transformers-4.5x key names
  (DINOv2 ``attention.attention.query`` etc.), exactly as the real checkpoint stores them;
- text_model/: a ModernBERT config and a real (tiny, uncased WordPiece) tokenizer trained on the
  sentences below;
- vision_model/: a DINOv2 config and DINOv2's image-processor settings.

The folder names in config.json are relative, and the Encoder resolves them beside the
checkpoint, so the folder can be moved. Usage: ``python tests/tiny_checkpoint.py OUT_DIR``.
Runs offline in about a second.

The size keywords (``hidden``, ``layers``, ``heads``, ``text_layers``, ``vision_layers``,
``text_intermediate``, ``vocab_size``, ``text_max_positions``) also let the same writer produce a
full-size random-weight MultiEmbedTR (benchmarks/encode.py does); the defaults are the tiny model.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

# Written for this file (not taken from any dataset): enough Turkish to train a tokenizer.
TURKISH_SENTENCES = [
    "karlı dağlar ve mavi gökyüzü",
    "deniz kenarında gün batımı",
    "iki köpek karlı bir alanda oynuyor",
    "çimenlerde koşan kahverengi bir köpek",
    "sahilde top oynayan çocuklar",
    "kırmızı elbiseli bir kadın caddede yürüyor",
    "bisiklet süren genç bir adam",
    "gölde yüzen beyaz kuğular",
    "şehir meydanında kalabalık bir grup insan",
    "ormanda yürüyüş yapan bir aile",
    "kayalıkların üzerinden atlayan bir çocuk",
    "suya atlayan siyah bir köpek",
    "yeşil tişörtlü bir çocuk salıncakta sallanıyor",
    "dalgalarda sörf yapan bir adam",
    "tekne ile denize açılan balıkçılar",
    "karda kayak yapan bir kayakçı",
    "futbol oynayan iki takım",
    "parkta dinlenen yaşlı bir çift",
    "ağacın altında kitap okuyan bir kız",
    "yolda koşan beyaz bir at",
    "gece ışıkları ile aydınlanan köprü",
    "çiçeklerle dolu bir bahçe",
    "kumsalda güneşlenen insanlar",
    "tepede duran bir kale",
    "yağmurda şemsiyeyle yürüyen bir adam",
    "ağzında sopa taşıyan sarı bir köpek",
    "havuzda yüzen küçük bir çocuk",
    "motosikletle toprak yolda giden bir sürücü",
    "dağın zirvesine tırmanan iki dağcı",
    "mutfakta yemek pişiren bir aşçı",
    "İstanbul Boğazı üzerinde uçan martılar",
    "Işıl ışıl bir şehir manzarası",
    "Ağaçların arasından süzülen güneş ışığı",
    "Çocuklar Şubat ayında kardan adam yapıyor",
    "Öğrenciler okul bahçesinde oyun oynuyor",
    "Üzgün görünen bir kedi pencereden bakıyor",
]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VISION_FOLDER = "vision_model"
TEXT_FOLDER = "text_model"

# The DINOv2-base image processor (facebook/dinov2-base preprocessor_config.json).
DINOV2_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}

# transformers 5.x DINOv2 names -> the 4.5x names the real checkpoint keeps.
_TO_OLD_NAMES = (
    (re.compile(r"\.attention\.q_proj\."), ".attention.attention.query."),
    (re.compile(r"\.attention\.k_proj\."), ".attention.attention.key."),
    (re.compile(r"\.attention\.v_proj\."), ".attention.attention.value."),
    (re.compile(r"\.attention\.o_proj\."), ".attention.output.dense."),
)


def write_tokenizer(folder: Path) -> int:
    """Write an uncased WordPiece tokenizer in transformers' format; return its size.

    The vocabulary is built directly (special tokens, every character with and without the
    "##" continuation prefix, every whole word of TURKISH_SENTENCES, all sorted) rather than
    trained: WordPieceTrainer breaks ties in hash order, so each run gave a different tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = sorted(
        {
            word
            for sentence in TURKISH_SENTENCES
            for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(sentence))
        }
    )
    chars = sorted({c for word in words for c in word})
    tokens = SPECIAL_TOKENS + chars + [f"##{c}" for c in chars]
    tokens += [w for w in words if w not in set(tokens)]
    tokenizer = Tokenizer(
        models.WordPiece(vocab={t: i for i, t in enumerate(tokens)}, unk_token="[UNK]")
    )
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=8192,
    )
    fast.save_pretrained(folder)
    return tokenizer.get_vocab_size()


def make_tiny_model(
    folder: Path,
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
    *,
    heads: int = 2,
    text_layers: int | None = None,
    vision_layers: int | None = None,
    text_intermediate: int | None = None,
    vocab_size: int | None = None,
    text_max_positions: int = 512,
):
    """Build the model with random weights and write its component folders.

    ``text_layers`` / ``vision_layers`` default to ``layers``, ``text_intermediate`` to
    ``hidden * 3 // 2`` (ModernBERT-base's ratio), ``vocab_size`` (rows of the token embedding) to
    the tokenizer's size; a larger ``vocab_size`` leaves the extra rows unused by the tokenizer.
    """
    from transformers import Dinov2Config, ModernBertConfig

    import imagesearchtr.multiembedtr as me

    text_dir, vision_dir = folder / TEXT_FOLDER, folder / VISION_FOLDER
    text_dir.mkdir(parents=True, exist_ok=True)
    vision_dir.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(text_dir)
    if vocab_size is not None and vocab_size < vocab:
        raise ValueError(f"vocab_size {vocab_size} is below the tokenizer's {vocab} tokens")
    text_config = ModernBertConfig(
        vocab_size=vocab if vocab_size is None else vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 3 // 2 if text_intermediate is None else text_intermediate,
        num_hidden_layers=layers if text_layers is None else text_layers,
        num_attention_heads=heads,
        pad_token_id=SPECIAL_TOKENS.index("[PAD]"),
        cls_token_id=SPECIAL_TOKENS.index("[CLS]"),
        bos_token_id=SPECIAL_TOKENS.index("[CLS]"),
        sep_token_id=SPECIAL_TOKENS.index("[SEP]"),
        eos_token_id=SPECIAL_TOKENS.index("[SEP]"),
        max_position_embeddings=text_max_positions,
    )
    text_config.save_pretrained(text_dir)
    vision_config = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=layers if vision_layers is None else vision_layers,
        num_attention_heads=heads,
        mlp_ratio=4,
        image_size=518,
        patch_size=14,
    )
    vision_config.save_pretrained(vision_dir)
    (vision_dir / "preprocessor_config.json").write_text(json.dumps(DINOV2_PREPROCESSOR, indent=2))

    config = me.MultiEmbedTRConfig(TEXT_FOLDER, VISION_FOLDER, embed_dim=hidden)
    torch.manual_seed(seed)
    model = me.MultiEmbedTR(text_config, vision_config, config)
    # Random init leaves LayerNorms at identity and layer scales at 1; perturb every tensor so
    # a loader that skips or swaps one gives visibly different embeddings.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
        model.logit_scale.fill_(float(torch.log(torch.tensor(1 / 0.07))))
    return model, config


def to_checkpoint_keys(state_dict: dict) -> dict:
    """Rename to the transformers-4.5x layout of the real checkpoint."""
    renamed = {}
    for key, tensor in state_dict.items():
        if key.startswith("vision_encoder."):
            for pattern, replacement in _TO_OLD_NAMES:
                key = pattern.sub(replacement, key)
        renamed[key] = tensor.detach().clone().contiguous()
    return renamed


def write_tiny_checkpoint(
    folder: str | Path,
    *,
    formats: tuple[str, ...] = ("bin",),
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
    **sizes: int,
) -> Path:
    """Write a MultiEmbedTR checkpoint; ``formats`` picks "bin" and/or "safetensors".

    ``sizes`` are the size keywords of ``make_tiny_model`` (heads, text_layers, vision_layers,
    text_intermediate, vocab_size, text_max_positions); without them the model is tiny.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, config = make_tiny_model(folder, hidden=hidden, layers=layers, seed=seed, **sizes)
    state_dict = to_checkpoint_keys(model.state_dict())
    del model  # at full size the model and its renamed copy are ~0.9 GB each
    if "bin" in formats:
        torch.save(state_dict, folder / "pytorch_model.bin")
    if "safetensors" in formats:
        from safetensors.torch import save_file

        save_file(state_dict, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["MultiModalEmbedder"],
                "auto_map": {
                    "AutoConfig": "configuration_multimodal.MultiModalConfig",
                    "AutoModel": "modeling_multimodal.MultiModalEmbedder",
                },
                "model_type": "multimodal_embedder",
                "text_model_name": config.text_model_name,
                "vision_model_name": config.vision_model_name,
                "embed_dim": config.embed_dim,
                "torch_dtype": "float32",
                "transformers_version": "4.53.0",
            },
            indent=2,
        )
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the checkpoint into")
    parser.add_argument(
        "--format",
        choices=["bin", "safetensors", "both"],
        default="bin",
        help="weight file format (default: bin, as MultiEmbedTR ships)",
    )
    parser.add_argument("--hidden", type=int, default=32, help="hidden size = embedding dim")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    formats = ("bin", "safetensors") if args.format == "both" else (args.format,)
    path = write_tiny_checkpoint(args.out, formats=formats, hidden=args.hidden, seed=args.seed)
    print(path)


if __name__ == "__main__":
    main()
