"""Encode images and captions into parquet shards, resumably, reusing what is already encoded.

Reads an input source (pipeline/inputs.py), a model, and optionally rows encoded before (this
build folder's own shards, and ``--reuse``: a published dataset, on the Hub or in a folder);
writes into the build folder:
- ``build.json``: the model (id, revision, fingerprint, dim), the input, and the plan: the list
  of shard files that make up this build, in row order;
- ``shards/shard-NNNNN-KEY.parquet``: one row per image (image bytes, image_id, path, captions,
  image_emb, caption_emb, sha256), written atomically shard by shard;
- ``shards/shard-NNNNN-KEY.skipped.jsonl``: the rows that shard could not use, with reasons;
- ``skipped.jsonl``: every skipped input of the whole build, rewritten at the end;
- ``summary.json``: what this run did (images, encoded_images, reused_images, encoded_captions,
  reused_captions, skipped), removed when the run starts and written at its end.

Resumability: the input is planned first (a content-hash pass that also merges identical image
files; records in a fixed order), and the plan is cut into fixed chunks; chunk i becomes shard i,
named by its position and KEY, a hash of the chunk's content (ids, paths, image hashes, captions,
model fingerprint). A shard file appears only once complete (pipeline/_io.py), so a run killed
at any point resumes by skipping the shards of its plan that exist: no row is lost or written
twice.

Updates: re-running on a changed input makes a new plan. Chunks whose content did not change
keep their name and so are already done. The other chunks are written again, and each of their
rows whose image sha256 matches a row encoded before (with the same model weight fingerprint)
copies that row's embeddings bit for bit instead of running the model; its caption embedding is
copied too when its captions are the same, else only its captions are encoded. Shards of the
old plan stay until the new plan is complete (they are the cache a killed update resumes
from), then they are deleted. A different model needs ``--overwrite``. A folder without its
``captions.jsonl`` is refused where the rows encoded before from it (or ``--reuse``'s) hold
captions (an empty file drops them on purpose), and the summary counts the images that lost
theirs.

The feed (pipeline/feed.py) decodes and preprocesses the images of the chunks to encode in
``workers`` processes, runs the model only on images no earlier row holds, and writes each
finished shard on a background thread, where the reused rows join the new ones in plan order.

Sharding across processes (pipeline/distributed.py): with ``torchrun`` (``WORLD_SIZE``/``RANK``
set) the ranks form a gloo group for the run. Rank 0 plans (only it hashes the whole input) and
sends the plan to the others; all ranks check they hold the same plan hash; rank 0 checks or
clears (``--overwrite``) the build folder while the others wait. Rank r then encodes the chunks
i with i % world_size == r, reading only those images' bytes; the chunks, and so the rows, are
the same as in one process. After a barrier, rank 0 writes the summary.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import _io
from .index import (
    BUILD_FILE,
    REUSE_LAYOUT_FILE,
    REUSE_MANIFEST_FILE,
    SHARDS_DIR,
    SKIPPED_FILE,
    SUMMARY_FILE,
    read_build_info,
)
from .inputs import (
    CAPTIONS_FILE,
    DUPLICATE,
    EMPTY_FILE,
    MISSING_FILE,
    UNREADABLE_FILE,
    EmptyBuildError,
    FolderSource,
    ImageRecord,
    Skip,
)

INPUT_SKIPS_FILE = "skipped-inputs.jsonl"
# The columns a reused row is read for: never the image bytes (the input has them).
REUSE_COLUMNS = ["sha256", "captions", "image_emb", "caption_emb"]


@dataclass(frozen=True)
class EncodeConfig:
    """Settings of one encode run (the CLI's flags)."""

    out: Path
    model: str = "utkubascakir/MultiEmbedTR"
    revision: str | None = None
    batch_size_img: int = 32
    batch_size_txt: int = 64
    device: str = "auto"
    dtype: str | None = None
    shard_size: int = 256
    overwrite: bool = False
    reuse: str | None = None  # a published dataset (Hub id or folder) to copy embeddings from
    reuse_revision: str | None = None
    workers: int | None = None  # decode processes; None: pipeline.feed.default_workers

    def __post_init__(self):
        # Named as the CLI flags are: the CLI builds this before any work.
        for name in ("batch_size_img", "batch_size_txt", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"--workers must be >= 0 (0: in the main process), got {self.workers}")


@dataclass(frozen=True)
class EncodeSummary:
    """What one encode run did; ``counts()`` is BUILD/summary.json."""

    images: int  # rows in the build
    encoded_images: int  # images this run ran through the model
    reused_images: int  # rows whose image embedding was encoded before (copied or kept)
    encoded_captions: int
    reused_captions: int
    skipped: int
    skipped_reasons: dict
    seconds: float
    # False on the other ranks of a torchrun: rank 0 alone reports what the run did.
    reports: bool = True
    notes: tuple[str, ...] = ()  # what the user should know about the rows kept
    # The first missing file's skip, "PATH: REASON" (which may name the file meant), shown as
    # an example under the counts.
    missing_example: str = ""

    @property
    def num_captions(self) -> int:
        return self.encoded_captions + self.reused_captions

    def counts(self) -> dict:
        keys = ("images", "encoded_images", "reused_images", "encoded_captions")
        keys += ("reused_captions", "skipped")
        return {key: getattr(self, key) for key in keys}


def features(dim: int):
    """The row schema. Embeddings are fixed-size float32 lists: the fastest to load."""
    from datasets import Features, Image, List, Value

    return Features(
        {
            "image": Image(),
            "image_id": Value("string"),
            "path": Value("string"),
            "captions": List(Value("string")),
            "image_emb": List(Value("float32"), length=dim),
            "caption_emb": List(Value("float32"), length=dim),
            "sha256": Value("string"),
        }
    )


def plan(records: list[ImageRecord]) -> tuple[list[tuple[ImageRecord, str]], list[Skip]]:
    """Hash every image once; drop unreadable files; merge identical files into one row."""
    planned: list[tuple[ImageRecord, str]] = []
    skips: list[Skip] = []
    first_by_hash: dict[str, ImageRecord] = {}
    for record in tqdm(records, desc="hashing", unit="img", disable=len(records) < 1000):
        try:
            data = record.read_bytes()
        except FileNotFoundError:
            reason = f"missing file ({record.hint})" if record.hint else "missing file"
            skips.append(Skip(record.path, MISSING_FILE, reason))
            continue
        except OSError as err:
            reason = f"unreadable file ({err.strerror or err})"
            skips.append(Skip(record.path, UNREADABLE_FILE, reason))
            continue
        if not data:
            skips.append(Skip(record.path, EMPTY_FILE, "empty file (0 bytes)"))
            continue
        digest = hashlib.sha256(data).hexdigest()
        first = first_by_hash.get(digest)
        if first is not None:
            # Same picture twice: encode it once and keep every caption on the one row.
            first.captions.extend(c for c in record.captions if c not in first.captions)
            reason = f"duplicate of {first.path} (same bytes); captions merged"
            skips.append(Skip(record.path, DUPLICATE, reason))
            continue
        first_by_hash[digest] = record
        planned.append((record, digest))
    return planned, skips


def shard_name(index: int, chunk: list[tuple[ImageRecord, str]], fingerprint: str) -> str:
    """``shard-NNNNN-KEY.parquet``: KEY changes whenever anything the shard holds would."""
    digest = hashlib.sha256(fingerprint.encode())
    for record, sha in chunk:
        digest.update(json.dumps([record.image_id, record.path, sha, record.captions]).encode())
    return f"shard-{index:05d}-{digest.hexdigest()[:12]}.parquet"


def run_encode(source, config: EncodeConfig, encoder=None) -> EncodeSummary:
    """Encode ``source`` into ``config.out``; resumes or updates an earlier build there."""
    with contextlib.ExitStack() as lock:  # the build's lock, held until the summary is written
        return _run_encode(source, config, encoder, lock)


def _run_encode(source, config: EncodeConfig, encoder, lock: contextlib.ExitStack):
    from huggingface_hub.errors import RevisionNotFoundError

    from imagesearchtr import Encoder

    from .distributed import barrier, check_same, coordination, rank0_first, share_from_rank0
    from .feed import default_workers, encode_chunks

    started = time.perf_counter()
    out = Path(config.out)
    shards_dir = out / SHARDS_DIR
    with coordination() as ranks:
        # Rank 0 takes it (under torchrun the other ranks write into the folder as its helpers);
        # a refusal reaches every rank with its reason.
        rank0_first(ranks, lambda: lock.enter_context(_io.build_lock(out, "encode", create=True)))
        earlier = {}  # the build.json of the run before: this run is an update
        if not config.overwrite and (out / BUILD_FILE).is_file():
            earlier = read_build_info(out)
        reused = None  # the manifest --reuse names, read once, at one commit
        if config.reuse:
            # One commit for the whole run and every rank, read by rank 0: a push to the
            # branch meanwhile changes nothing.
            reused = share_from_rank0(
                ranks, lambda: _reused_manifest(config.reuse, config.reuse_revision)
            )
            config = replace(config, reuse_revision=reused.revision or config.reuse_revision)
        # Before the model loads, and before the build changes.
        rank0_first(ranks, lambda: _refuse_dropping_captions(source, config, reused, earlier))
        if encoder is None:
            # An update keeps the model's commit and its components (tokenizer, image processor)
            # the build began with, whatever their Hub repos hold now: rows of one build are
            # tokenised alike (the weights' fingerprint would not see a new tokenizer). A new
            # build over published rows takes them as those rows were made.
            made_with = earlier or (vars(reused.manifest) if reused else {})
            pinned = made_with.get("component_revisions") or None
            kept = None  # the commit the rows were made with, when this run loads it
            same_model = str(made_with.get("model_id", "")).lower() == config.model.lower()
            if config.revision is None and same_model:  # (Hub ids are not case-sensitive)
                kept = made_with.get("model_revision")  # (None for a model folder)
            try:
                encoder = Encoder.from_pretrained(
                    config.model,
                    revision=config.revision or kept,
                    device=config.device,
                    dtype=config.dtype,
                    component_revisions=pinned,
                )
            except RevisionNotFoundError as err:
                url = str(getattr(getattr(err, "response", None), "url", ""))
                if kept is None or kept not in url:  # (a component's commit: its own message)
                    raise
                raise ValueError(
                    f"{config.model} no longer has commit {kept[:12]}, which the rows of "
                    f"{'--reuse ' + config.reuse if not earlier else out} were made with; pass "
                    "--revision (another commit of the same weights), or --overwrite to encode "
                    "every image again"
                ) from None
        # Checked before any work: a --reuse made with another model is refused at once.
        reuse_files, reuse_revision = published_files(
            config.reuse, reused, encoder.fingerprint, encoder.component_revisions
        )
        records, input_skips = source.read()  # a listing: no image bytes are read here
        planned, plan_skips = _shared_plan(ranks, records)
        if not planned:  # (a moved or unmounted photo folder): refused before the build changes
            kinds = Counter(skip.kind for skip in input_skips + plan_skips)
            raise EmptyBuildError(
                f"{source.describe()}: no usable image (skipped: "
                + (", ".join(f"{kind} {n}" for kind, n in kinds.most_common()) or "none, no input")
                + "); add images or fix the input, then run encode again. No row of the "
                f"build in {out} was changed"
            )
        chunks = [
            planned[i : i + config.shard_size] for i in range(0, len(planned), config.shard_size)
        ]
        names = [shard_name(i, chunk, encoder.fingerprint) for i, chunk in enumerate(chunks)]
        # The shard names hash every row of the plan (each rank's own records at rank 0's
        # positions): equal names over equally long listings, equal plans.
        plan_hash = hashlib.sha256("\n".join([str(len(records)), *names]).encode()).hexdigest()
        check_same(ranks, plan_hash[:16], "plan hash")
        build = {
            "model_id": encoder.model_id,
            "model_revision": encoder.revision,
            "model_fingerprint": encoder.fingerprint,
            "component_revisions": encoder.component_revisions,
            "dtype": dtype_name(encoder.dtype),
            "dim": encoder.dim,
            "source": source.label(),
            "num_planned": len(planned),
            "shard_size": config.shard_size,
            "shards": names,
        }
        if config.reuse:
            build["reuse"] = {"location": config.reuse, "revision": reuse_revision}

        def prepare() -> None:  # rank 0 checks or clears the folder; the others wait for it
            _prepare_build_dir(out, build, config.overwrite)
            if reuse_files:
                _write_reuse_layout(out, reuse_files)
            if reused is not None:  # index keeps its creation time if it writes the same one
                _io.write_text(out / REUSE_MANIFEST_FILE, reused.manifest.to_json())
            else:  # (a re-seed's, months old by the next plain update, is not the one to keep)
                (out / REUSE_MANIFEST_FILE).unlink(missing_ok=True)
            _write_jsonl(out / INPUT_SKIPS_FILE, input_skips + plan_skips)

        rank0_first(ranks, prepare)

        mine = ranks.my_chunks(len(chunks))
        for i in mine:  # a run killed mid-write leaves its temporary files: not data, remove them
            _io.remove_orphans(shards_dir, Path(names[i]).stem + ".*")
        todo = [i for i in mine if not (shards_dir / names[i]).exists()]
        # Rows encoded before: the shards of earlier plans still in the folder, then --reuse.
        planned_names = set(names)
        old = [p for p in sorted(shards_dir.glob("shard-*.parquet")) if p.name not in planned_names]
        cache = RowCache([(None, str(p)) for p in old] + reuse_files) if todo else None
        stats = Counter()
        workers = config.workers
        if workers is None:
            workers = default_workers(encoder.device, ranks.local_world_size)
        with tqdm(
            total=sum(len(chunks[i]) for i in mine),
            initial=sum(len(chunks[i]) for i in mine if i not in todo),
            desc="encoding" if not ranks.distributed else f"encoding ({ranks.label()})",
            unit="img",
            smoothing=0.1,
        ) as bar:
            complete = _Completer(chunks, names, shards_dir, cache, encoder, config, stats, bar)
            # The feed runs the model only on the images no earlier row holds; the writer
            # thread puts each chunk's rows back together with the reused ones, in plan order.
            encode_chunks(
                [(i, complete.new_images(i)) for i in todo],
                encoder,
                complete,
                batch_size=config.batch_size_img,
                text_batch_size=config.batch_size_txt,
                workers=workers,
                progress=bar.update,
                log=tqdm.write,
            )
        barrier(ranks)  # every rank's shards are written
        stats = _sum_over_ranks(ranks, stats)
    if not ranks.is_main:
        return replace(_summary(stats, 0, 0, [], started), reports=False)
    summary_skips = _collect_skips(out, names)
    images, captions = _count_rows(shards_dir, names)
    summary = _summary(stats, images, captions, summary_skips, started)
    notes = []
    before, now = earlier.get("dtype"), dtype_name(encoder.dtype)
    if before and before != now and summary.reused_images:
        # Rows are reused by image and model, not by precision: say so rather than let
        # `--dtype float32` look as if it had re-encoded the build.
        notes.append(
            f"the {summary.reused_images} images encoded before keep their {before} "
            f"embeddings; this run encoded with {now} (--overwrite encodes every image with "
            f"{now})"
        )
    if earlier.get("source") and earlier["source"] != source.label():
        # Another --data (a typo, a sub-folder, another collection): the build is now that
        # input's, and the next index and publish replace the dataset's rows with it.
        notes.append(
            f"the build was made from {earlier['source']}, and now holds the rows of "
            f"{source.label()} only: {images} (it had {earlier.get('num_planned', '?')})"
        )
    if stats["uncaptioned_images"]:
        # A present captions.jsonl (or caption column) is taken as it is: removing lines is how
        # captions are removed. A file cut short reads the same, so the loss is said.
        if isinstance(source, FolderSource):
            why = f"no line of {CAPTIONS_FILE} names them, or theirs were skipped"
        else:
            why = f"their {getattr(source, 'caption_column', 'caption')!r} cells are empty"
        notes.append(
            f"{stats['uncaptioned_images']} images that had captions before have none now: "
            f"{why} ({SKIPPED_FILE} says why); search finds them by their pixels alone"
        )
    summary = replace(summary, notes=tuple(notes))
    _io.write_text(out / SUMMARY_FILE, json.dumps(summary.counts(), indent=2) + "\n")
    if images == 0:  # not a finished update: the old rows stay, for the run that fixes it
        raise EmptyBuildError(
            f"{source.describe()}: no usable image ({len(summary_skips)} inputs skipped, reasons "
            f"in {out / SKIPPED_FILE}); add images or fix the input, then run encode again"
        )
    # The new plan is complete: the shards of the old one are no longer needed.
    for path in old:
        path.with_suffix(".skipped.jsonl").unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    return summary


def _refuse_dropping_captions(source, config: EncodeConfig, reused, earlier: dict) -> None:
    """Refuse a folder without its captions.jsonl where the rows encoded before (this build's,
    or those of the dataset ``--reuse`` names) hold captions.

    Such a folder reads as photos without captions (a first build of one is fine), so an
    update would drop every caption of the build, and the next publish every caption of the
    dataset: a file deleted, or not copied with the photos, is the likelier cause. An empty
    captions.jsonl says "no captions" on purpose; ``--overwrite`` discards the build anyway.
    A build made from another folder (``earlier``, its build.json) is not refused: its rows
    are replaced by this folder's, which the summary's note says (``make demo`` of the sample,
    then ``make demo DATA=my-photos``), unless the folder is a sub-folder of one with captions.
    """
    if not isinstance(source, FolderSource) or source.captions_file.is_file():
        return
    source.check()  # (a folder that is not there: said as such)
    out = Path(config.out)
    folder = source.folder
    in_captioned = (folder.parent / CAPTIONS_FILE).is_file()  # --data photos/images, say
    same_input = earlier.get("source") in (None, source.label())
    held = []
    if not config.overwrite and (same_input or in_captioned):
        # every shard in the folder: an update killed before included
        shards = [p.name for p in sorted((out / SHARDS_DIR).glob("shard-*.parquet"))]
        captions = _count_rows(out / SHARDS_DIR, shards)[1]
        if captions:
            held.append(f"the build in {out} holds {captions} captions")
    if reused is not None and reused.manifest.num_captions:
        held.append(f"--reuse {config.reuse} holds {reused.manifest.num_captions} captions")
    if not held:
        return
    meant = ""
    if in_captioned:
        meant = f" ({folder.parent} has one: did you mean --data {folder.parent}?)"
    raise FileNotFoundError(
        f"--data {folder} has no {CAPTIONS_FILE}{meant}, but {' and '.join(held)}, which this "
        f"run would drop; restore {source.captions_file} and run encode again, or, to leave "
        f"every caption out on purpose, create it empty. No row of the build in {out} was "
        "changed"
    )


def _shared_plan(ranks, records: list[ImageRecord]):
    """Rank 0 plans (hashing every image); every rank gets the same plan over its own records.

    Records hold closures (their ``read_bytes``) that cannot be sent between processes, so
    rank 0 sends each planned record's position in the listing, its sha256 and its captions
    (duplicates' captions merged), and each rank rebuilds the plan from its own listing.
    """
    from .distributed import share_from_rank0

    def make_plan():
        planned, skips = plan(records)
        where = {id(r): i for i, r in enumerate(records)}
        return [(where[id(r)], digest, list(r.captions)) for r, digest in planned], skips

    shared, skips = share_from_rank0(ranks, make_plan)
    planned = []
    for position, digest, captions in shared:
        if position >= len(records):
            # This rank lists fewer inputs than rank 0: the plan hash, which counts the
            # listing, differs, so check_same stops every rank with a message naming them.
            continue
        record = records[position]
        record.captions[:] = captions
        planned.append((record, digest))
    return planned, skips


def _write_reuse_layout(out: Path, reuse_files) -> None:
    """The index step lays out the data files like the reused dataset's, so a re-publish
    leaves its unchanged files as they are; recorded now, so index needs no network."""
    from . import datafiles

    layout = datafiles.read_previous(
        [(fs, path, f"{datafiles.DATA_DIR}/{Path(path).name}") for fs, path in reuse_files]
    )
    _io.write_text(out / REUSE_LAYOUT_FILE, json.dumps(layout) + "\n")


def _summary(stats: Counter, images: int, captions: int, skips: list, started: float):
    return EncodeSummary(
        images=images,
        encoded_images=stats["encoded_images"],
        reused_images=max(images - stats["encoded_images"], 0),
        encoded_captions=stats["encoded_captions"],
        reused_captions=max(captions - stats["encoded_captions"], 0),
        skipped=len(skips),
        skipped_reasons=dict(Counter(skip_kind(s) for s in skips)),
        seconds=time.perf_counter() - started,
        missing_example=next(
            (f"{s['source']}: {s['reason']}" for s in skips if skip_kind(s) == MISSING_FILE), ""
        ),
    )


def dtype_name(dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``, as ``--dtype`` names it."""
    return str(dtype).removeprefix("torch.")


def skip_kind(entry: dict) -> str:
    """The kind of a skipped.jsonl entry (builds made before kinds existed: its reason)."""
    return entry.get("kind") or entry.get("reason", "")


class _Completer:
    """The feed's ``write``: one chunk's shard from the feed's new rows plus the reused ones.

    ``new_images(i)`` are the images of chunk i the feed encodes (those no earlier row holds).
    Called with the feed's ``ChunkRows`` (on its writer thread), it reads the reused rows'
    embeddings from the cache, encodes the captions of reused images whose captions changed,
    and writes the shard with every row in plan order.
    """

    def __init__(self, chunks, names, shards_dir, cache, encoder, config, stats, bar):
        self.chunks, self.names, self.shards_dir = chunks, names, shards_dir
        self.cache, self.encoder, self.config = cache, encoder, config
        self.stats, self.bar = stats, bar
        self.row_features = features(encoder.dim)

    def new_images(self, i: int) -> list[tuple[ImageRecord, str]]:
        if self.cache is None:
            return list(self.chunks[i])
        return [(r, d) for r, d in self.chunks[i] if d not in self.cache]

    def __call__(self, done) -> None:
        from .feed import add_row, caption_embeddings

        chunk = self.chunks[done.index]
        fresh = {digest: k for k, digest in enumerate(done.rows["sha256"])}
        self.stats["encoded_images"] += len(fresh)
        self.stats["encoded_captions"] += sum(len(c) for c in done.rows["captions"])
        reused = [(r, d) for r, d in chunk if d not in fresh and d in (self.cache or ())]
        known = self.cache.lookup([d for _, d in reused]) if reused else {}
        # Reused images whose captions changed: only their captions are encoded.
        changed = [(r, d) for r, d in reused if known[d][1] != r.captions]
        embed = lambda texts: self.encoder.encode_texts(  # noqa: E731
            texts, batch_size=self.config.batch_size_txt, show_progress_bar=False
        )
        new_caps = caption_embeddings([r.captions for r, _ in changed], embed)
        new_caps = {d: vec for (_, d), vec in zip(changed, new_caps, strict=True)}
        self.stats["encoded_captions"] += sum(len(r.captions) for r, _ in changed)
        # (rows of unchanged shards keep their captions: only rewritten chunks can lose any)
        self.stats["uncaptioned_images"] += sum(1 for r, d in changed if not r.captions)
        rows = {name: [] for name in self.row_features}
        skips = list(done.skips)
        for record, digest in chunk:
            if digest in fresh:
                k = fresh[digest]
                for name in rows:
                    rows[name].append(done.rows[name][k])
                continue
            if digest not in known:
                continue  # the feed skipped it (done.skips says why)
            try:
                data = record.read_bytes()
            except OSError as err:
                skips.append(Skip(record.path, UNREADABLE_FILE, f"unreadable file ({err})"))
                continue
            image_emb, _, caption_emb = known[digest]
            add_row(rows, record, data, digest, image_emb, new_caps.get(digest, caption_emb))
        self.bar.update(len(reused))
        _write_shard(self.shards_dir / self.names[done.index], rows, skips, self.row_features)


class RowCache:
    """Rows encoded before, found by image sha256 and read lazily from parquet files.

    ``files`` are (filesystem or None for local, path) pairs. Opening reads only each file's
    sha256 column; ``lookup`` then reads, from the files that hold wanted rows, only the row
    groups holding them and only the columns REUSE_COLUMNS (never the image bytes), so a
    published dataset on the Hub serves as a cache without being downloaded.
    """

    def __init__(self, files: list[tuple[object, str]]):
        import pyarrow.parquet as pq

        self._files = []
        self._where: dict[str, tuple[int, int]] = {}
        for fs, path in tqdm(files, desc="reading reusable rows", unit="file", disable=not files):
            handle = fs.open(path, "rb") if fs is not None else path
            parquet = pq.ParquetFile(handle)
            shas = parquet.read(columns=["sha256"]).column("sha256").to_pylist()
            file_no = len(self._files)
            self._files.append(parquet)
            for row, sha in enumerate(shas):
                self._where.setdefault(sha, (file_no, row))

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, digest: str) -> bool:
        return digest in self._where

    def lookup(self, digests: list[str]) -> dict[str, tuple]:
        """sha256 -> (image_emb, captions, caption_emb or None) for the digests found."""
        from imagesearchtr.vectors import embedding_matrix

        digests = set(digests)
        wanted: dict[int, list[int]] = {}
        for digest in digests:
            if digest in self._where:
                file_no, row = self._where[digest]
                wanted.setdefault(file_no, []).append(row)
        found = {}
        for file_no, rows in wanted.items():
            parquet = self._files[file_no]
            starts = np.cumsum(
                [0]
                + [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
            )
            groups = sorted({int(np.searchsorted(starts, r, side="right")) - 1 for r in rows})
            table = parquet.read_row_groups(groups, columns=REUSE_COLUMNS)
            dim = table.schema.field("image_emb").type.list_size
            image_emb, _ = embedding_matrix(table.column("image_emb"), dim)
            caption_emb, caption_valid = embedding_matrix(table.column("caption_emb"), dim)
            captions = table.column("captions").to_pylist()
            for i, sha in enumerate(table.column("sha256").to_pylist()):
                if sha in digests and sha not in found:
                    cap = caption_emb[i] if caption_valid[i] else None
                    found[sha] = (image_emb[i], captions[i], cap)
        return found


def _reused_manifest(location: str, revision: str | None):
    """The LoadedManifest of the published dataset ``--reuse`` names; one clear line if none."""
    from imagesearchtr.manifest import load_manifest

    try:
        return load_manifest(location, revision, index_files=False)
    except Exception as err:  # no manifest, a bad one, HTTP errors, no network: one line
        raise ValueError(
            f"--reuse {location}: {err}; give a published dataset id (USER/NAME) or a folder "
            "written by `publish --to`"
        ) from None


def published_files(location: str | None, loaded, fingerprint: str, components=None):
    """([(filesystem or None, path)], resolved revision) of a published dataset's data files.

    ``location`` is a Hub dataset id or a folder written by ``publish --to``, and ``loaded``
    its manifest (``_reused_manifest``); refused when it names another model than
    ``fingerprint``, or other commits of the model's components (tokenizer, image processor)
    than ``components``, the encoder's.
    """
    if location is None:
        return [], None
    from imagesearchtr.manifest import DATA_DIR

    manifest, sha = loaded.manifest, loaded.revision
    if sha is None:  # a local folder
        files = [(None, str(p)) for p in sorted((loaded.root / DATA_DIR).glob("*.parquet"))]
    else:
        from huggingface_hub import HfFileSystem

        fs = HfFileSystem()
        pattern = f"datasets/{location}@{sha}/{DATA_DIR}/*.parquet"
        files = [(fs, p) for p in sorted(fs.glob(pattern))]
    if manifest.model_fingerprint != fingerprint:
        raise ValueError(
            f"--reuse {location} was encoded with another model ({manifest.model_id}, "
            f"fingerprint {manifest.model_fingerprint[:19]}...) than --model "
            f"({fingerprint[:19]}...); pass the model it was made with, or drop --reuse"
        )
    recorded = manifest.component_revisions
    if recorded and recorded != (components or {}):  # (older manifests record none: unknown)
        # Rows tokenised by one tokenizer commit and queries by another would not match.
        raise ValueError(
            f"--reuse {location}'s rows were made with the model's components at "
            f"{_pins(recorded)}, this build uses {_pins(components)}; "
            "start a new build (a new --out) to reuse them, or drop --reuse"
        )
    return files, sha


def _pins(components: dict | None) -> str:
    pins = [f"{repo}@{sha[:10]}" for repo, sha in sorted((components or {}).items())]
    return ", ".join(pins) or "the model's own folder"


def _write_shard(final: Path, rows: dict, skips: list[Skip], row_features):
    """Skips first, then the parquet: the parquet's appearance marks the shard done."""
    import pyarrow.parquet as pq

    from .feed import shard_table

    _write_jsonl(final.with_suffix(".skipped.jsonl"), skips)
    # The Arrow table carries the datasets features in its schema metadata, so load_dataset
    # reads the columns back as Image / List(float32, length=dim).
    table = shard_table(rows, row_features)
    with _io.atomic_path(final) as tmp:
        pq.write_table(table, str(tmp), row_group_size=100)


def _write_jsonl(path: Path, skips: list[Skip]) -> None:
    _io.write_text(path, "".join(s.to_json() + "\n" for s in skips))


def _prepare_build_dir(out: Path, build: dict, overwrite: bool) -> None:
    """Refuse a build folder made with another model; record this run's plan in build.json.

    Runs on rank 0 only, while the other ranks wait (``rank0_first``): no rank plans from, or
    writes into, a folder ``--overwrite`` is clearing.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the build (new or not)")
    build_file = out / BUILD_FILE
    if build_file.is_file() and not overwrite:
        previous = read_build_info(out)
        if previous.get("model_fingerprint") != build["model_fingerprint"]:
            made_with = previous.get("model_id")
            raise ValueError(
                f"{out} holds a build made with the model {made_with} "
                f"({previous.get('model_fingerprint')}), whose weights are not this run's "
                f"--model {build['model_id']} ({build['model_fingerprint']}): pass --model "
                f"{made_with} to update it, --overwrite to encode it all again with "
                f"{build['model_id']}, or choose another --out folder"
            )
    if overwrite and out.exists():
        for path in (out / SHARDS_DIR).glob("*"):
            path.unlink()
    (out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    build_files = (SKIPPED_FILE, INPUT_SKIPS_FILE, BUILD_FILE, SUMMARY_FILE)
    for name in (*build_files, REUSE_LAYOUT_FILE, REUSE_MANIFEST_FILE):
        if overwrite:
            (out / name).unlink(missing_ok=True)
        # A run killed while writing one of the build's own files left its temporary copy.
        _io.remove_orphans(out, name)
    # The summary says what one run did: gone until this run writes its own, so that a run
    # killed before its end leaves none rather than the run before's, of another plan.
    (out / SUMMARY_FILE).unlink(missing_ok=True)
    _io.write_text(build_file, json.dumps(build, indent=2) + "\n")


def _collect_skips(out: Path, names: list[str]) -> list[dict]:
    """Concatenate input-level and per-shard skips into BUILD/skipped.jsonl."""
    entries = []
    files = [out / INPUT_SKIPS_FILE]
    files += [(out / SHARDS_DIR / name).with_suffix(".skipped.jsonl") for name in names]
    for path in files:
        if path.is_file():
            entries.extend(
                json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line
            )
    text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
    _io.write_text(out / SKIPPED_FILE, text)
    return entries


def _count_rows(shards_dir: Path, names: list[str]) -> tuple[int, int]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    images = captions = 0
    for name in names:
        path = shards_dir / name
        if not path.exists():
            continue
        table = pq.read_table(path, columns=["captions"])
        images += table.num_rows
        captions += int(pc.sum(pc.list_value_length(table["captions"])).as_py() or 0)
    return images, captions


def _sum_over_ranks(ranks, stats: Counter) -> Counter:
    """Every rank's counts added up (on every rank); one process: its own."""
    if not ranks.distributed:
        return stats
    import torch.distributed as dist

    gathered: list = [None] * ranks.world_size
    dist.all_gather_object(gathered, dict(stats))
    return sum((Counter(g) for g in gathered), Counter())


def summary_text(summary: EncodeSummary) -> str:
    # The build's size first, then what this run did: a re-run that changed nothing must not
    # read as if it had encoded the whole build again.
    took = f"{summary.seconds:.1f} s"
    if summary.encoded_images and summary.seconds:
        took += f", {summary.encoded_images / summary.seconds:.1f} images encoded/s"
    lines = [
        f"build: {summary.images} images with {summary.num_captions} captions ({took})",
        f"  images: {summary.encoded_images} encoded, {summary.reused_images} reused; "
        f"captions: {summary.encoded_captions} encoded, {summary.reused_captions} reused "
        f"(counts in {SUMMARY_FILE})",
        f"skipped {summary.skipped} inputs (reasons in {SKIPPED_FILE})",
    ]
    for kind, count in sorted(summary.skipped_reasons.items()):
        lines.append(f"  {count:6d}  {kind}")
        if kind == MISSING_FILE and summary.missing_example:
            lines.append(f"          e.g. {summary.missing_example}")
    lines += [f"note: {note}" for note in summary.notes]
    if summary.images and not summary.num_captions:
        lines.append(
            "warning: no caption was read, so search finds these photos by their pixels "
            "alone (Deep Search has no caption to weigh in, and the results show none); a "
            f"folder's captions come from its {CAPTIONS_FILE}, one UTF-8 JSON "
            f"line per caption (README, 'Your own photos'; {SKIPPED_FILE} says why a line failed)"
        )
    return "\n".join(lines)
