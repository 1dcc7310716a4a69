"""Command line: ``python -m pipeline COMMAND --help`` (download ... evaluate, below).

The only place that parses arguments; each command builds its module's frozen config (or its
arguments) and calls the module.
Known failures (bad input, missing files, Hub refusals) end with one ``error:`` line and exit
status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from imagesearchtr.manifest import DATA_DIR, INDEX_DIR, MANIFEST_FILE

from .download import DownloadConfig
from .encode import EncodeConfig
from .evaluate import (
    DEFAULT_ALPHAS,
    DEFAULT_COMPOSED_ALPHAS,
    DEFAULT_NEGATIVE_WEIGHTS,
    DEFAULT_TEXT_WEIGHTS,
)
from .index import AUTO_RULE, BUILD_FILE, INDEX_TYPES, SHARDS_DIR, IndexConfig, read_build_info
from .inputs import HubSource
from .publish import CARD_FILE, PublishConfig
from .space import DEFAULT_HARDWARE, SpaceConfig

SHOWN_DELETES = 10  # deleted files `publish` names; the rest it counts
DESCRIPTION = f"""\
Build a searchable Turkish image dataset: download -> encode -> index -> publish.

  python -m pipeline download --num-samples {DownloadConfig.num_samples} --output-dir data/
  python -m pipeline encode --data data/ --model {EncodeConfig.model} --out build/
  python -m pipeline index --build build/
  python -m pipeline publish --build build/ --repo USER/NAME     (or --to FOLDER)
  python -m pipeline publish-space --space USER/NAME-search --dataset-repo USER/NAME
  python -m pipeline evaluate --repo USER/NAME            (--composed: composed-query weights)
"""


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where a default means something (not None or False)."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.required:
            return action.help
        return super()._get_help_string(action)


class _ArgvError(Exception):
    """An argparse error, raised rather than said, so that ``_parse_args`` can add to it;
    ``unknown``: the arguments a command did not know, when that was the error."""

    def __init__(self, parser: argparse.ArgumentParser, message: str, unknown=()):
        super().__init__(message)
        self.parser, self.message, self.unknown = parser, message, list(unknown)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # (argparse: an override "should either exit or raise")
        raise _ArgvError(self, message)


class _CommandParser(_Parser):
    """A command's parser: refuses arguments it does not know itself (with its own usage, not
    the top-level one), naming the flag a mistyped one was probably meant to be."""

    def parse_known_args(self, args=None, namespace=None):
        import difflib

        namespace, unknown = super().parse_known_args(args, namespace)
        if unknown:
            # The namespace has every flag's dest, and every flag is its dest with dashes
            # (--batch-size-img: batch_size_img), but --help, which has none.
            flags = [f"--{dest.replace('_', '-')}" for dest in vars(namespace)] + ["--help"]
            hints = []
            for arg in unknown:
                if arg.startswith("--"):
                    flag = arg.split("=", 1)[0]
                    close = difflib.get_close_matches(flag, flags, n=1)
                    if close:
                        hints.append(f"{flag}: did you mean {close[0]}?")
            hint = f" ({'; '.join(hints)})" if hints else ""
            raise _ArgvError(self, f"unrecognized arguments: {' '.join(unknown)}{hint}", unknown)
        return namespace, unknown


def build_parser(strict: bool = True) -> argparse.ArgumentParser:
    """The parser of every command; ``strict=False``: no flag is required (``_parse_args``)."""
    parser = _Parser(
        prog="python -m pipeline",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )
    defaults = _DefaultsFormatter

    p = commands.add_parser(
        "download",
        help="stream a shuffled sample of a Hub image-caption dataset into a folder",
        description="Writes OUTPUT_DIR/images/* and OUTPUT_DIR/captions.jsonl; re-running "
        "completes a partial download.",
        formatter_class=defaults,
    )
    p.add_argument(
        "--num-samples", type=int, default=DownloadConfig.num_samples, help="rows to sample"
    )
    p.add_argument("--seed", type=int, default=DownloadConfig.seed, help="shuffle seed")
    p.add_argument("--output-dir", type=_path, required=strict, help="folder to write into")
    p.add_argument("--split", default=DownloadConfig.split, help="long_captions or short_captions")
    p.add_argument("--dataset", default=DownloadConfig.dataset, help="Hub dataset id")
    p.add_argument(
        "--buffer-size", type=int, default=DownloadConfig.buffer_size, help="shuffle buffer size"
    )
    p.add_argument(
        "--image-column", default=DownloadConfig.image_column, help="image column of --dataset"
    )
    p.add_argument(
        "--caption-column",
        default=DownloadConfig.caption_column,
        help="caption column of --dataset",
    )
    p.add_argument(
        "--id-column", default=DownloadConfig.id_column, help="id column of --dataset, if any"
    )

    p = commands.add_parser(
        "encode",
        help="embed images and captions into resumable parquet shards",
        description="Writes BUILD/build.json, BUILD/shards/*.parquet, BUILD/skipped.jsonl and "
        "BUILD/summary.json. A killed run resumes where it stopped when run again with the "
        "same arguments. Run again on a changed input, it updates the build: images it "
        "encoded before (same sha256, same model) keep their embeddings, new or changed ones "
        "are encoded, removed ones disappear. An update of a build with captions refuses its "
        "--data folder (or a sub-folder of it) without captions.jsonl (create it empty to drop "
        "them on purpose).",
        formatter_class=defaults,
    )
    source = p.add_mutually_exclusive_group(required=strict)
    source.add_argument(
        "--data", type=_path, help="folder with captions.jsonl and images (see README)"
    )
    source.add_argument("--hf-dataset", help="a Hub dataset id to read directly instead")
    p.add_argument("--split", default=HubSource.split, help="split of --hf-dataset")
    p.add_argument(
        "--image-column", default=HubSource.image_column, help="image column of --hf-dataset"
    )
    p.add_argument(
        "--caption-column", default=HubSource.caption_column, help="caption column of --hf-dataset"
    )
    p.add_argument(
        "--id-column", default=HubSource.id_column, help="id column of --hf-dataset, if any"
    )
    p.add_argument(
        "--model",
        default=None,
        help=f"Hub id or folder (default: for an update, the model the build in --out was made "
        f"with, as its {BUILD_FILE} records; else {EncodeConfig.model})",
    )
    p.add_argument(
        "--revision",
        default=None,
        help="model revision (branch, tag or commit; Hub ids only; default: the newest, or for "
        "an update or a --reuse build the commit its rows were made with)",
    )
    p.add_argument("--out", type=_path, required=strict, help="build folder")
    p.add_argument(
        "--batch-size-img",
        type=int,
        default=EncodeConfig.batch_size_img,
        help="images decoded and sent to the model together (on CPU its forward runs them in "
        "smaller batches)",
    )
    p.add_argument(
        "--batch-size-txt",
        type=int,
        default=EncodeConfig.batch_size_txt,
        help="captions per forward pass",
    )
    p.add_argument("--device", default=EncodeConfig.device, help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--dtype",
        default=None,
        help="float32, bfloat16 or float16 (default: the fastest dtype that keeps "
        "cosine >= 0.999 to float32)",
    )
    p.add_argument(
        "--shard-size", type=int, default=EncodeConfig.shard_size, help="rows per parquet shard"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="discard an existing build in --out first (needed to change the model)",
    )
    p.add_argument(
        "--reuse",
        default=None,
        metavar="REPO_OR_DIR",
        help="a published dataset (Hub id or `publish --to` folder) made with the same model: "
        "images whose sha256 it holds keep its embeddings instead of being encoded again",
    )
    p.add_argument("--reuse-revision", default=None, help="revision of a --reuse Hub dataset")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that read, decode and preprocess images ahead of the model; 0: in the "
        "main process; the shards are the same for any number (default: half the cores, split "
        "between torchrun's local ranks, halved again on CPU, at most 16)",
    )

    p = commands.add_parser(
        "index",
        help="build FAISS inner-product indices and the manifest",
        description="Writes BUILD/data/train-NNNNN.parquet (the data files publish uploads), "
        "BUILD/index/{image_emb,caption_emb}.faiss, BUILD/index/image_ranges.npy (where each "
        "image's bytes lie in its data file) and BUILD/index/manifest.json. After an "
        "update, data files whose rows did not change are kept byte for byte; new rows go to "
        "new files.",
        formatter_class=defaults,
    )
    p.add_argument("--build", type=_path, required=strict, help="build folder from `encode`")
    p.add_argument(
        "--index-type",
        type=_index_type,
        default=IndexConfig.index_type,
        help=f"{', '.join(INDEX_TYPES)}, or a FAISS factory string (auto: {AUTO_RULE})",
    )
    p.add_argument(
        "--max-data-file-size",
        default=None,
        metavar="SIZE",
        help="target size of the data files written to BUILD/data, e.g. 500MB (default: "
        "datasets' push_to_hub shard size); files of unchanged rows are kept as they are",
    )

    p = commands.add_parser(
        "publish",
        help="publish data + indices + card to a Hub dataset repo or a local folder",
        description="Uploads data/*.parquet, index/* and README.md, only the files that "
        "changed, in one commit (or, above the Hub's files-per-commit guidance, in commits on "
        "a pull request merged once; an interrupted run resumes it); the same layout in a "
        "local folder with --to. Uses HF_TOKEN or `hf auth login`.",
        formatter_class=defaults,
    )
    p.add_argument("--build", type=_path, required=strict, help="build folder from `index`")
    target = p.add_mutually_exclusive_group(required=strict)
    target.add_argument("--repo", type=_repo_id, help="Hub dataset repo id, USER/NAME")
    target.add_argument("--to", type=_path, help="local folder to write the repo layout into")
    p.add_argument(
        "--private",
        action="store_true",
        help="create the Hub repo as private (an existing repo keeps its visibility)",
    )
    p.add_argument(
        "--license",
        default=None,
        help="license id of the source data for the card (default: the existing card's, else "
        "other)",
    )
    p.add_argument(
        "--license-name",
        default=None,
        help="with license other: an id for its terms, like my-license-1.0 (the card's "
        "license_name; default: the existing card's)",
    )
    p.add_argument(
        "--license-link",
        default=None,
        help="with license other: where its terms are, a URL or a file of the repo such as "
        "LICENSE.md (the card's license_link; default: the existing card's)",
    )
    p.add_argument(
        "--space",
        type=_space_ref,
        default=None,
        help="the Space (USER/NAME) or running app (http(s) URL) whose /embed the card's usage "
        "example calls (default: REPO-search, as make publish names it; with --to, "
        "http://127.0.0.1:7860/)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=PublishConfig.retries,
        help="commit retries on server errors, 0 or more (waits 1, 2, 4 s ...)",
    )

    p = commands.add_parser(
        "publish-space",
        help="publish the search app as a Gradio Space (or write it to a local folder)",
        description="Uploads space/app.py, space/imagesearchtr/*.py, a requirements.txt "
        "(space/requirements.txt's pins fitted to --hardware) and a Space card in one commit, "
        "after setting the Space variables DATASET_REPO and DATASET_REVISION (pinned to the "
        "dataset's commit). With --to, writes the same files to a new folder (or one it wrote "
        "before) and prints the command that runs them. Uses HF_TOKEN or `hf auth login`.",
        formatter_class=defaults,
    )
    target = p.add_mutually_exclusive_group(required=strict)
    target.add_argument("--space", type=_repo_id, help="Hub Space id, USER/NAME")
    target.add_argument("--to", type=_path, help="local folder to write the Space files into")
    p.add_argument(
        "--dataset-repo",
        required=strict,
        help="the published dataset: a Hub dataset id, or (with --to) a local folder",
    )
    p.add_argument(
        "--dataset-revision", default=None, help="dataset branch, tag or commit (default: main)"
    )
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument(
        "--hardware",
        default=DEFAULT_HARDWARE,
        help="Spaces hardware: cpu-basic (free), cpu-upgrade, t4-small, l4x1, a10g-small, "
        "zero-a10g (ZeroGPU), ... The requirements fit it (CPU-only torch on CPU hardware, "
        "`spaces` on ZeroGPU), the card suggests it, and it is requested from the Hub where "
        "the Space has other hardware (paid hardware needs a payment method, ZeroGPU a PRO "
        "account)",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="return after the upload instead of following the build until the Space runs",
    )
    p.add_argument(
        "--wait-timeout",
        type=float,
        default=SpaceConfig.wait_timeout,
        help="seconds to wait for the Space to run before giving up (exit 2)",
    )

    p = commands.add_parser(
        "evaluate",
        help="text-to-image Recall@1/5/10, median rank and MRR of a published dataset",
        description="Uses every caption as a query for its own image; image-only search "
        "against Deep Search over an alpha sweep, under two protocols: leave-one-out (the "
        "row's caption embedding made without the query caption; choose alpha with it) and "
        "own-caption (the stored embeddings, which contain the query: an upper bound). "
        "With --composed, also composed queries at several weights, to choose them. "
        "Prints tables and writes JSON.",
        formatter_class=defaults,
    )
    p.add_argument("--repo", required=strict, help="published dataset: Hub id or local folder")
    p.add_argument("--revision", default=None, help="dataset revision (Hub only)")
    p.add_argument(
        "--alphas", default=_listed(DEFAULT_ALPHAS), help="comma-separated Deep Search alphas"
    )
    p.add_argument(
        "--output", type=_path, default=Path("evaluation.json"), help="JSON file to write"
    )
    p.add_argument("--device", default="auto", help="device for the query encoder")
    p.add_argument(
        "--model",
        default=None,
        help="query encoder: a model folder or Hub id (default: the model the manifest names); "
        "its weights must be the ones the dataset was encoded with, which is checked",
    )
    p.add_argument(
        "--composed",
        action="store_true",
        help="also measure composed queries (Searcher.search_combined's vector) at several "
        "weights: 'A - w*B' for caption words A, B (share of the top 10 with A and not B) and "
        "a similar row's image + w * a caption (Recall@1/10 of the caption's row); written "
        "under 'composed' in the JSON",
    )
    p.add_argument(
        "--negative-weights",
        default=_listed(DEFAULT_NEGATIVE_WEIGHTS),
        help="with --composed: comma-separated weights of the negative term (positive: 1)",
    )
    p.add_argument(
        "--text-weights",
        default=_listed(DEFAULT_TEXT_WEIGHTS),
        help="with --composed: comma-separated weights of the text term beside an image "
        "(image: 1); the text alone is always added",
    )
    p.add_argument(
        "--composed-alphas",
        default=_listed(DEFAULT_COMPOSED_ALPHAS),
        help="with --composed: Deep Search alphas tried besides image-only search (which is "
        "what composed queries use); empty for image-only alone",
    )
    return parser


def _listed(numbers) -> str:
    """A comma-separated flag value: (0.0, 0.25, 1.0) -> "0,0.25,1"."""
    return ",".join(f"{n:g}" for n in numbers)


def _path(text: str) -> Path:
    """A path flag's value; an empty one (an unset shell variable) would mean this folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; give a folder or file name")
    return Path(text)


def _repo_id(text: str) -> str:
    """A repo to publish to: USER/NAME (or ORG/NAME). A bare NAME does not say whose repo it
    is, and creating and reading it need not agree (the test Hub answers 501)."""
    from imagesearchtr.manifest import repo_id_problem

    problem = repo_id_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a repo id: {problem}")
    return text


def _space_ref(text: str) -> str:
    """A Space the dataset card points at: its id USER/NAME, or the URL of a running app."""
    if text.startswith(("http://", "https://")):
        return text
    return _repo_id(text)


def _index_type(text: str) -> str:
    """One of INDEX_TYPES in any case and spacing ("Flat ", "FLAT"), else the factory string."""
    name = text.strip()
    return name.lower() if name.lower() in INDEX_TYPES else name


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the output's reader went away (`| head`): not a failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (the exit's flush)
        return 141  # as a shell reports a command ended by SIGPIPE
    except Exception as err:
        # The Hub unreachable, whichever library noticed it first (httpx, huggingface_hub's
        # offline errors, datasets' ConnectionError): one line naming the address.
        unreachable = _unreachable(err)
        if unreachable is not None:
            print(f"error: {unreachable}", file=sys.stderr)
            return 2
        # Our own errors subclass these: the encode feed's FeedError, the ranks'
        # DistributedError (RuntimeError), the encoder's NonFiniteEmbeddingError (ValueError).
        if isinstance(err, (ValueError, RuntimeError)):
            print(f"error: {_one_line(err)}", file=sys.stderr)
            return 2
        refused = _hub_refused(err)
        if refused is not None:
            print(f"error: {refused}", file=sys.stderr)
            return 2
        # The system's answer about a path (a file where a folder must be, no space left, no
        # permission), whose message names the path. After the Hub's: its HTTP errors are
        # OSErrors too.
        if isinstance(err, OSError):
            print(f"error: {_one_line(err)}", file=sys.stderr)
            return 2
        # Last, a dropped connection of huggingface_hub's own client (httpx2, whose errors are
        # neither httpx's nor OSErrors) that reached here unwrapped. Not first: publish wraps
        # these in its own error ("failed ... after 2 attempts"), which says more.
        unreachable = _unreachable(err, any_client=True)
        if unreachable is not None:
            print(f"error: {unreachable}", file=sys.stderr)
            return 2
        raise


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The arguments; a mistake in them exits 2 with the command's usage and one error line.

    argparse looks for a missing required flag before it returns the ones it does not know, so
    a mistyped `--ouput b3` read only as "the following arguments are required: --out": a parse
    that requires nothing finds those, which are said first.
    """
    try:
        return build_parser().parse_args(argv)
    except _ArgvError as err:
        refused = err
    message = refused.message
    if not refused.unknown:
        try:
            build_parser(strict=False).parse_args(argv)
        except _ArgvError as loose:
            if loose.unknown:
                message = f"{loose.message}; {message}"
    refused.parser.print_usage(sys.stderr)
    refused.parser.exit(2, f"{refused.parser.prog}: error: {message}\n")


def _hub_refused(err: BaseException) -> str | None:
    """The one-line message for an HTTP error answer of the Hub somewhere in ``err``'s chain."""
    from huggingface_hub.errors import HfHubHTTPError

    from imagesearchtr.manifest import refused_access

    cause = _in_chain(err, (HfHubHTTPError,))
    if cause is None:
        return None
    status = getattr(cause.response, "status_code", None)
    try:
        url = str(cause.response.request.url)
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError for a missing request
        url = "the Hub"
    if status in (401, 403):
        return refused_access(status, url)
    return f"the Hub answered {url} with HTTP {status}: {_one_line(cause)}"


def _one_line(err: BaseException) -> str:
    """The message on one line (a message may quote a multi-line library error)."""
    return " ".join(str(err).split()) or type(err).__name__


def _in_chain(err: BaseException, types: tuple) -> BaseException | None:
    """The first exception of ``types`` in ``err``'s chain of causes (itself first), or None."""
    seen, cause = set(), err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, types):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _unreachable(err: BaseException, any_client: bool = False) -> str | None:
    """The one-line message for "the Hub could not be reached" somewhere in ``err``'s chain;
    ``any_client`` counts httpx2's transport errors too, not only httpx's."""
    import httpx
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    from imagesearchtr.manifest import transport_errors

    transports = transport_errors() if any_client else (httpx.TransportError,)
    cause = _in_chain(
        err, (*transports, LocalEntryNotFoundError, ConnectionError, OfflineModeIsEnabled)
    )
    if cause is None:
        return None
    if isinstance(cause, OfflineModeIsEnabled):
        return f"the Hub is not used offline (HF_HUB_OFFLINE=1): {cause}"
    try:
        url = cause.request.url
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError for a missing request
        url = None
    where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "") if url else ""
    where = where or constants.ENDPOINT
    kind = type(cause).__name__
    return (
        f"cannot reach the Hugging Face Hub at {where} ({kind}); check the network connection, "
        "a proxy, or HF_ENDPOINT, then run the same command again"
    )


def _download(args) -> int:
    from .download import run_download

    summary = run_download(
        DownloadConfig(
            output_dir=args.output_dir,
            num_samples=args.num_samples,
            seed=args.seed,
            split=args.split,
            dataset=args.dataset,
            buffer_size=args.buffer_size,
            image_column=args.image_column,
            caption_column=args.caption_column,
            id_column=args.id_column,
        )
    )
    print(
        f"wrote {summary.written} images, kept {summary.kept} already there (written by an "
        "earlier run, or for an earlier row of this one with the same image)"
    )
    for line in summary.skipped:
        print(f"  skipped {line}")
    if summary.rows < args.num_samples:
        print(
            f"note: {args.dataset} ({args.split}) has {summary.rows} rows, fewer than "
            f"--num-samples {args.num_samples}: all of them were read"
        )
    return 0


def _encode(args) -> int:
    from .encode import run_encode, summary_text
    from .inputs import FolderSource

    if args.data is not None and _holds(args.out, args.data):
        raise ValueError(
            f"--out {args.out} would put the build's data/, index/ and shards/ where the photos "
            f"of --data {args.data} are; give the build a folder of its own"
        )
    model = _encode_model(args)
    if args.revision is not None and Path(model).expanduser().is_dir():
        # A folder has no revisions; recording one would pin the index to a commit it never had.
        raise ValueError(
            f"--revision {args.revision} names a commit of a Hub model, but the model "
            f"{model} is a local folder; drop --revision, or pass the model's Hub id"
        )
    if args.reuse_revision is not None and args.reuse is None:
        raise ValueError(
            f"--reuse-revision {args.reuse_revision} pins the dataset --reuse names, and no "
            "--reuse was given; add --reuse USER/NAME (or a published folder), or drop it"
        )
    if args.data is not None:
        source = FolderSource(args.data)
        source.check()  # a typo in --data: said before the model loads (seconds to minutes)
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
        model=model,
        revision=args.revision,
        batch_size_img=args.batch_size_img,
        batch_size_txt=args.batch_size_txt,
        device=args.device,
        dtype=args.dtype,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
        reuse=args.reuse,
        reuse_revision=args.reuse_revision,
        workers=args.workers,
    )
    summary = run_encode(source, config)
    if summary.reports:  # under torchrun: rank 0 alone
        print(summary_text(summary))
    return 0


def _encode_model(args) -> str:
    """--model; without it, an update's is the model its build.json records (the default Hub
    model would be refused there, once downloaded, for a build of another), and a new build's
    (or --overwrite's) the default."""
    if args.model is not None:
        return args.model
    if not args.overwrite and (args.out / BUILD_FILE).is_file():
        from .distributed import ranks_from_env

        recorded = read_build_info(args.out).get("model_id")
        if isinstance(recorded, str) and recorded:
            if ranks_from_env().is_main:  # (under torchrun: said once)
                print(f"model: {recorded} (from {BUILD_FILE})")
            return recorded
    return EncodeConfig.model


def _holds(build: Path, photos: Path) -> bool:
    """Whether the build folder is the photos folder, or holds it in data/, index/ or shards/."""
    build, photos = build.expanduser().resolve(), photos.expanduser().resolve()
    return photos == build or any(
        photos.is_relative_to(build / name) for name in (DATA_DIR, INDEX_DIR, SHARDS_DIR)
    )


def _index(args) -> int:
    from .index import IndexConfig, run_index

    target = None
    if args.max_data_file_size is not None:
        from datasets.utils.py_utils import convert_file_size_to_int

        try:
            target = convert_file_size_to_int(args.max_data_file_size)
            IndexConfig(args.build, target_bytes=target)  # the size rule's home
        except ValueError:
            raise ValueError(
                f"--max-data-file-size {args.max_data_file_size!r}: give a size above 0, like 500MB"
            ) from None
    config = IndexConfig(build=args.build, index_type=args.index_type, target_bytes=target)
    manifest = run_index(config)
    kinds = ", ".join(f"{i.column}: {i.factory} ({i.ntotal})" for i in manifest.indices)
    print(f"indexed {manifest.num_rows} rows, dim {manifest.dim}; {kinds}")
    print(f"manifest: {Path(args.build) / INDEX_DIR / MANIFEST_FILE}")
    return 0


def _publish(args) -> int:
    from .publish import publish_to_folder, publish_to_hub

    config = PublishConfig(
        build=args.build,
        repo_id=args.repo,
        to=args.to,
        private=args.private,
        source_license=args.license,
        license_name=args.license_name,
        license_link=args.license_link,
        space=args.space,
        retries=args.retries,
    )
    result = publish_to_hub(config) if args.repo else publish_to_folder(config)
    state = "published" if result.changed else "already up to date:"
    where = f"{result.location}@{result.revision}" if result.revision else result.location
    print(f"{state} {where}")
    if result.changed:
        written = len(result.uploaded) + result.card_changed
        print(f"files written: {written}, deleted: {len(result.deleted)}")
        if result.card_changed:
            print(f"  wrote {CARD_FILE} (the card)")
        for path in result.deleted[:SHOWN_DELETES]:
            print(f"  deleted {path}")
        if len(result.deleted) > SHOWN_DELETES:
            print(f"  ... and {len(result.deleted) - SHOWN_DELETES} more")
    if result.revision:
        print(f"revision: {result.revision}")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def _publish_space(args) -> int:
    from .space import publish_space_to_folder, publish_space_to_hub

    config = SpaceConfig(
        dataset_repo=args.dataset_repo,
        space_id=args.space,
        to=args.to,
        dataset_revision=args.dataset_revision,
        private=args.private,
        hardware=args.hardware,
        wait=not args.no_wait,
        wait_timeout=args.wait_timeout,
    )
    result = publish_space_to_hub(config) if args.space else publish_space_to_folder(config)
    if result.revision:
        print(f"published space {result.location}@{result.revision}")
    else:
        print(f"wrote the Space files to {result.location}")
    for key, value in result.variables.items():
        print(f"  {key}={value}")
    if result.url:
        print(f"url: {result.url}")
    if result.stage:
        print(f"stage: {result.stage}")
    if result.revision:
        print(f"revision: {result.revision}")
    if result.run_command:
        print(f"run it: {result.run_command}")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def _numbers(flag: str, text: str, low: float, high: float) -> tuple[float, ...]:
    """A comma-separated list of numbers in [low, high], or a ValueError naming the flag."""
    try:
        numbers = tuple(float(a) for a in text.split(",") if a.strip())
    except ValueError:
        raise ValueError(f"{flag} {text!r}: give numbers like 0,0.5,1") from None
    if any(not low <= a <= high for a in numbers):
        raise ValueError(f"{flag} {text!r}: each number must be between {low:g} and {high:g}")
    return numbers


def _evaluate(args) -> int:
    from imagesearchtr import Searcher

    from .evaluate import evaluate, evaluate_composed, format_composed, format_table, save

    alphas = _numbers("--alphas", args.alphas, 0, 1)
    output = Path(args.output)  # checked now, not after the evaluation it would lose
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder; give a file, e.g. {output / 'e.json'}")
    if not output.parent.is_dir():
        raise ValueError(f"--output {output}: there is no folder {output.parent}; create it first")
    if args.composed:
        negative = _numbers("--negative-weights", args.negative_weights, 0, 100)
        text = _numbers("--text-weights", args.text_weights, 0, 100)
        composed_alphas = _numbers("--composed-alphas", args.composed_alphas, 0, 1)
    encoder = None
    if args.model is not None:  # say, the folder a dataset was encoded with, moved since
        from imagesearchtr import Encoder
        from imagesearchtr.manifest import load_manifest

        pins = load_manifest(args.repo, args.revision, index_files=False).manifest
        encoder = Encoder.from_pretrained(
            args.model, device=args.device, component_revisions=pins.component_revisions or None
        )
    searcher = Searcher.from_repo(args.repo, args.revision, encoder=encoder, device=args.device)
    results = evaluate(searcher, alphas)
    print(format_table(results))
    composed = None
    if args.composed:
        composed = evaluate_composed(searcher, negative, text, composed_alphas)
        print()
        print(format_composed(composed))
    save(results, args.output, searcher.location, composed)
    print(f"wrote {args.output}")
    return 0


COMMANDS = {
    "evaluate": _evaluate,
    "download": _download,
    "encode": _encode,
    "index": _index,
    "publish": _publish,
    "publish-space": _publish_space,
}
