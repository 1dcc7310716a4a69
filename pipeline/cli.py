"""Command line: ``python -m pipeline {download,encode,index,publish} --help``.

The only place that parses arguments; each command builds a frozen config and calls its module.
Known failures (bad input, missing files, Hub refusals) end with one ``error:`` line and exit
status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .download import DEFAULT_DATASET

DESCRIPTION = """\
Build a searchable Turkish image dataset: download -> encode -> index -> publish.

  python -m pipeline download --num-samples 1000 --output-dir data/
  python -m pipeline encode --data data/ --model utkubascakir/MultiEmbedTR --out build/
  python -m pipeline index --build build/
  python -m pipeline publish --build build/ --repo USER/NAME     (or --to FOLDER)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    defaults = argparse.ArgumentDefaultsHelpFormatter

    p = commands.add_parser(
        "download",
        help="stream a shuffled sample of a Hub image-caption dataset into a folder",
        description="Writes OUTPUT_DIR/images/* and OUTPUT_DIR/captions.jsonl; re-running "
        "completes a partial download.",
        formatter_class=defaults,
    )
    p.add_argument("--num-samples", type=int, default=1000, help="rows to sample")
    p.add_argument("--seed", type=int, default=14, help="shuffle seed")
    p.add_argument("--output-dir", type=Path, required=True, help="folder to write into")
    p.add_argument("--split", default="long_captions", help="long_captions or short_captions")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="Hub dataset id")
    p.add_argument("--buffer-size", type=int, default=10_000, help="shuffle buffer size")

    p = commands.add_parser(
        "encode",
        help="embed images and captions into resumable parquet shards",
        description="Writes BUILD/build.json, BUILD/shards/*.parquet and BUILD/skipped.jsonl. "
        "A killed run resumes where it stopped when run again with the same arguments.",
        formatter_class=defaults,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data", type=Path, help="folder with captions.jsonl and images (see README)"
    )
    source.add_argument("--hf-dataset", help="a Hub dataset id to read directly instead")
    p.add_argument("--split", default="train", help="split of --hf-dataset")
    p.add_argument("--image-column", default="image", help="image column of --hf-dataset")
    p.add_argument("--caption-column", default="text", help="caption column of --hf-dataset")
    p.add_argument("--id-column", default="image_id", help="id column of --hf-dataset, if any")
    p.add_argument("--model", default="utkubascakir/MultiEmbedTR", help="Hub id or folder")
    p.add_argument("--revision", default=None, help="model revision (branch, tag or commit)")
    p.add_argument("--out", type=Path, required=True, help="build folder")
    p.add_argument("--batch-size-img", type=int, default=32, help="images per forward pass")
    p.add_argument("--batch-size-txt", type=int, default=64, help="captions per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--dtype", default=None, help="float32, bfloat16 or float16 (default: fastest safe)"
    )
    p.add_argument("--shard-size", type=int, default=256, help="rows per parquet shard")
    p.add_argument(
        "--overwrite", action="store_true", help="discard an existing build in --out first"
    )

    p = commands.add_parser(
        "index",
        help="build FAISS inner-product indices and the manifest",
        description="Writes BUILD/index/{image_emb,caption_emb}.faiss and "
        "BUILD/index/manifest.json.",
        formatter_class=defaults,
    )
    p.add_argument("--build", type=Path, required=True, help="build folder from `encode`")
    p.add_argument(
        "--index-type",
        default="auto",
        help="auto, flat, hnsw, ivf-sq8, or a FAISS factory string (auto: flat up to "
        "200k rows, hnsw above)",
    )

    p = commands.add_parser(
        "publish",
        help="publish data + indices + card to a Hub dataset repo or a local folder",
        description="One commit holding data/*.parquet, index/* and README.md; the same "
        "layout in a local folder with --to. Uses HF_TOKEN or `hf auth login`.",
        formatter_class=defaults,
    )
    p.add_argument("--build", type=Path, required=True, help="build folder from `index`")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--repo", help="Hub dataset repo id, USER/NAME")
    target.add_argument("--to", type=Path, help="local folder to write the repo layout into")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument(
        "--license", default=None, help="license of the source data for the card (default other)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, TimeoutError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _download(args) -> int:
    from .download import DownloadConfig, run_download

    summary = run_download(
        DownloadConfig(
            output_dir=args.output_dir,
            num_samples=args.num_samples,
            seed=args.seed,
            split=args.split,
            dataset=args.dataset,
            buffer_size=args.buffer_size,
        )
    )
    print(f"wrote {summary.written} images, kept {summary.kept} already there")
    for line in summary.skipped:
        print(f"  skipped {line}")
    return 0


def _encode(args) -> int:
    from .encode import EncodeConfig, run_encode, summary_text
    from .inputs import FolderSource, HubSource

    if args.data is not None:
        source = FolderSource(args.data)
    else:
        source = HubSource(
            args.hf_dataset,
            split=args.split,
            image_column=args.image_column,
            caption_column=args.caption_column,
            id_column=args.id_column,
        )
    config = EncodeConfig(
        out=args.out,
        model=args.model,
        revision=args.revision,
        batch_size_img=args.batch_size_img,
        batch_size_txt=args.batch_size_txt,
        device=args.device,
        dtype=args.dtype,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
    )
    for name in ("batch_size_img", "batch_size_txt", "shard_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    print(summary_text(run_encode(source, config)))
    return 0


def _index(args) -> int:
    from .index import IndexConfig, run_index

    manifest = run_index(IndexConfig(build=args.build, index_type=args.index_type))
    kinds = ", ".join(f"{i.column}: {i.factory} ({i.ntotal})" for i in manifest.indices)
    print(f"indexed {manifest.num_rows} rows, dim {manifest.dim}; {kinds}")
    print(f"manifest: {Path(args.build) / 'index' / 'manifest.json'}")
    return 0


def _publish(args) -> int:
    from .publish import PublishConfig, publish_to_folder, publish_to_hub

    config = PublishConfig(
        build=args.build,
        repo_id=args.repo,
        to=args.to,
        private=args.private,
        source_license=args.license,
    )
    result = publish_to_hub(config) if args.repo else publish_to_folder(config)
    state = "published" if result.changed else "already up to date:"
    where = f"{result.location}@{result.revision}" if result.revision else result.location
    print(f"{state} {where}")
    if result.revision:
        print(f"revision: {result.revision}")
    return 0


COMMANDS = {"download": _download, "encode": _encode, "index": _index, "publish": _publish}
