"""ImageSearchTR Space: a Turkish text or a photo in, the closest photos of a dataset out.

Reads, from the environment only:
    DATASET_REPO      a Hub dataset id (USER/NAME) or a local folder written by
                      ``python -m pipeline publish`` (rows, FAISS indices, index/manifest.json)
    DATASET_REVISION  optional branch, tag or commit of that repo (``publish-space`` pins the
                      commit it was published against, so a later push cannot break the Space)
and through ``Searcher.from_repo`` the dataset's rows, indices and manifest plus the model the
manifest names (Hub cache). Writes the result images it shows: each once, as a JPEG named by
its content hash, into a folder of its own inside gradio's upload folder (GRADIO_TEMP_DIR),
so that gradio serves them as files the app created (ResultFolder says why); past
RESULTS_MAX_BYTES the least recently shown go. A query image sent as base64 is saved there as
an upload (QueryImage), and uploads unused for UPLOADS_KEEP_S are deleted (sweep_uploads).

The Searcher is loaded once, when the app starts. If that fails (no DATASET_REPO, a missing or
corrupt index, a manifest that does not match the rows, a model that is not the one that built
the index) the app still starts, shows the reason on the page and logs it once: a Space that
crashes at start-up restarts in a loop and shows only "Runtime error".
A failure of the Hub or the network (a 5xx, a 408, a 429, a dropped connection) is tried
again first (LOAD_ATTEMPTS), then, while it lasts, every RELOAD_EVERY_S in the background
(SearcherSlot): the queries answer as soon as the dataset loads, without a restart.

Public API (gradio_client), also served as MCP tools (launch); the first three answer
(gallery, results, status):
    /search(query, k, deep, alpha, image)
                                     text query; deep=True fuses image and caption scores,
                                     alpha * image + (1 - alpha) * caption. Composed queries:
                                     "köpek + kar - şehir" (only a + or - with spaces around it
                                     is an operator), and ``image`` (optional) a positive term
    /search_image(image, k)          image as query
    /search_similar(row, k, image_id)
                                     more like this: the photos closest to that row's photo
                                     (image_id, optional: refused if the row holds another now)
    /embed(text)                     the text's query embedding: a list of floats (L2-normalised),
                                     to search the dataset's FAISS index elsewhere without torch
``results`` is plain JSON: [{caption, captions, score, image_score, caption_score, row,
image_id, image_error}, ...]
best first; ``status`` is a one-line Turkish message (a result count, after /search_similar
with the photo it started from, or what went wrong).

The page: clicking a result offers "Benzerlerini bul" (/search_similar on its row); after a text
search it shows a link to it, ``?q=...&k=...&deep=...&alpha=...`` on the Space's public address
(SPACE_HOST) or the address the page was loaded from, and a page opened with those parameters
runs that search.

GPU: on ZeroGPU hardware the Space installs the ``spaces`` package (publish-space puts it in
requirements.txt only for ZeroGPU), and the query encoder runs inside ``@spaces.GPU``, which
ZeroGPU requires around GPU work (the FAISS search and the gallery run after it, on the CPU,
outside the GPU's time); the decorator does nothing outside ZeroGPU, and where the package is
not installed (CPU and dedicated-GPU Spaces, local runs) the functions run as they are.

Run locally: ``DATASET_REPO=USER/NAME python space/app.py`` (GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT, read by gradio itself, choose the address).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import io
import logging
import math
import os
import re
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

try:  # before torch is imported: ZeroGPU patches torch's CUDA start-up when spaces loads
    import spaces
except ImportError:  # not on ZeroGPU hardware (see the module docstring)
    spaces = None

import gradio as gr
import numpy as np
from gradio import processing_utils
from gradio.utils import get_upload_folder, is_in_or_equal

from imagesearchtr import (
    ImageLoadError,
    ModelMismatchError,
    RowMovedError,
    Searcher,
    SearchSetupError,
)
from imagesearchtr.images import MAX_PIXELS
from imagesearchtr.manifest import describe_error, is_transient_status, transport_errors
from imagesearchtr.texts import is_valid_unicode
from imagesearchtr.vectors import compose_vectors

log = logging.getLogger("imagesearchtr.space")

TITLE = "ImageSearchTR"
DESCRIPTION = (
    "Türkçe bir açıklama yazın ya da bir görsel yükleyin; "
    "MultiEmbedTR ile veri kümesindeki en benzer görselleri bulun."
)
EXAMPLES = [
    "karlı dağlar",
    "deniz kenarında gün batımı",
    "karda oynayan köpekler",
    "sahilde koşan çocuklar",
    "bisiklet süren bir adam",
]
MAX_RESULTS = 30
# /search and /embed refuse longer texts: the model reads 128 tokens a term, so more only costs
# parsing and tokenizer time (and a query of many MB, seconds of it and much memory).
MAX_QUERY_CHARS = 2000
# What a text with a lone surrogate ("\ud800") gets: JSON can carry one, UTF-8 cannot.
NOT_UNICODE = (
    "Metinde geçersiz bir karakter var (eşi olmayan bir UTF-16 vekili); silip yeniden yazın."
)
# /search_similar with the image id of a row that holds another photo now (or no longer
# exists): "The photo in this row changed (the dataset was updated); search again."
ROW_MOVED = "Bu satırdaki görsel değişti (veri kümesi güncellendi); yeniden arayın."
DEFAULT_RESULTS = 10
# After "Benzerlerini bul" the status names the photo by its first caption, cut (at a word) to
# this many characters: the line stays one line on a laptop's page (photo_name).
STATUS_CAPTION_CHARS = 80
_MARKDOWN_INLINE = re.compile(r"([\\`*_\[\]<>~])")  # what Markdown reads inside a line
DEFAULT_ALPHA = 0.6
# A Hub that fails for a moment while the Space starts (a 5xx, a 429, a dropped connection) must
# not leave it unavailable until someone restarts it: loading is tried LOAD_ATTEMPTS times,
# waiting LOAD_BACKOFF_S, then twice that, ... between tries (35 s in all).
LOAD_ATTEMPTS = 4
LOAD_BACKOFF_S = 5.0
# After those tries, a Hub that still fails is tried again this often, in the background, until
# the dataset loads (SearcherSlot): an outage of minutes must not need a restart either.
RELOAD_EVERY_S = 60.0

# One query is a ~50-100 ms text (or image) encode, in which torch already uses every core,
# then mostly single-threaded work: FAISS search (one thread for one query, flat and fp16
# alike), decoding and re-encoding the shown JPEGs for the gallery. Two at a time
# keeps both cores of a free CPU Space busy (one encoding while the other prepares its
# gallery); more would only make every query slower and raise peak memory.
# Further requests wait in the queue, which is bounded so that a burst gets a clear "queue is
# full" instead of minutes of waiting.
CONCURRENCY_LIMIT = 2
QUEUE_MAX_SIZE = 64
# Uploads larger than this are refused by gradio (HTTP 413) before they reach the disk: a query
# photo needs far less (a 64-megapixel JPEG, the decoder's limit, is ~10-30 MB).
MAX_UPLOAD = "50mb"
# Result images are written as JPEG files into this folder inside gradio's upload folder
# (ResultFolder); the quality of the gallery's own JPEG encoding.
RESULTS_FOLDER = "imagesearchtr-results"
JPEG_QUALITY = 90
# A Space runs for weeks: past this many bytes of result files, the least recently shown go
# (down to 80% of it), but never one shown in the last RESULTS_KEEP_S seconds, which a visitor's
# page may still fetch (its enlarged preview, say).
RESULTS_MAX_BYTES = 2 << 30
RESULTS_KEEP_S = 3600
# Visitors' uploads (query photos, or any file sent to /gradio_api/upload) would otherwise stay
# for the Space's life: sweep_uploads deletes those not used for this long, every
# UPLOADS_SWEEP_S. (gradio's own delete_cache counts from the upload, not from its last use, and
# its sweep stops for good when a request adds a file while it runs.)
UPLOADS_KEEP_S = 3600
UPLOADS_SWEEP_S = 600
# The longest side of a result image as the gallery gets it. The page is at most 1100 px wide,
# so more pixels would only cost decoding, encoding and the visitor's download; 1000 rather
# than 1024 lets the common 4000-4032 px phone photo be decoded at 1/4 scale, not 1/2
# (benchmarks/gallery.py). The price: the gallery's enlarged preview is a little soft on a
# high-density (2x) screen.
GALLERY_MAX_SIDE = 1000
# Composed queries: a "+" or "-" with whitespace on both sides joins two terms, so the hyphen of
# "Kuzey-Batı" or "15-20 yaş" stays part of the text (parse_query).
# Each term is one encoder call: more terms than this are refused, not queued for seconds.
MAX_TERMS = 8
# What to do about a query image sent as base64 (API, MCP) that is not valid base64 or holds
# no bytes: "send the image whole, as data:image/jpeg;base64,...".
BASE64_FIX = "görseli eksiksiz, `data:image/jpeg;base64,...` biçiminde gönderin"
# A query image given as a URL that gradio does not fetch (QueryImage): "Local or private
# network addresses (localhost, 127.0.0.1, 10.x, 192.168.x) and names that do not resolve are
# not fetched; give a public address, or upload the image."
URL_NOT_FETCHED = (
    "Görsel alınamadı: yerel ya da özel ağ adresleri (localhost, 127.0.0.1, 10.x, 192.168.x "
    "gibi) ve çözülemeyen adresler getirilmez; herkese açık bir adres verin ya da görseli "
    "yükleyin."
)
# Why an image could not be used, in the visitor's words (ImageLoadError.kind; the library's
# reason is English and may name a path of this server). An MCP client's base64 is decoded by
# gradio before the app sees it: one that decodes to nothing arrives as an empty file.
IMAGE_ERRORS = {
    "missing": "dosya bulunamadı",
    "empty": f"dosya boş (0 bayt; base64 ile gönderildiyse veri boş ya da geçersiz: {BASE64_FIX})",
    "no_pixels": "görselde hiç piksel yok",
    "too_large": f"görsel çok büyük (en çok {MAX_PIXELS // 1_000_000} megapiksel); küçültün",
    "not_an_image": "bir görsel dosyası değil ya da biçimi desteklenmiyor (ör. HEIC, SVG)",
    "broken": "görsel bozuk ya da eksik",
}
OPERATOR = re.compile(r"(?:^|(?<=\s))([+-])(?=\s|$)")
THEME = gr.themes.Soft(primary_hue="red", secondary_hue="indigo", neutral_hue="slate")
CSS = """
/* min(..., 100%): a bare 1100px let the page grow 32 px past a phone's screen, its right
   edge cut off */
.gradio-container { max-width: min(1100px, 100%) !important; margin: auto; }
#title h1 { margin-bottom: 0; }
#title p { margin-top: 4px; opacity: 0.8; }
.load-error { border: 1px solid #dc2626; border-radius: 8px; padding: 4px 12px;
              background: rgba(220, 38, 38, 0.08); }
#search-button { align-self: end; }
/* Keyboard users must see where focus is, on every control: the theme's only focus cue on a
   text box is a border colour, and its boxes have no border (input_border_width 0px); buttons,
   tabs, the checkbox, the slider and the result tiles had Chrome's thin black ring or nothing.
   An outline, not a shadow, also shows in forced-colours (high-contrast) mode; !important:
   gradio's text box sets outline: none !important (and its checkbox outline: none). Not
   ".gradio-container :focus-visible": gradio puts ".gradio-container.… .contain" before each
   selector, and no .gradio-container is inside .contain. */
:focus-visible { outline: 2px solid var(--secondary-500) !important; outline-offset: 2px; }
/* Inside a box that clips what is outside it (overflow: hidden), the ring goes inside the
   control: outside it showed one side of four. One full selector each: gradio's CSS rewriting
   splits selectors on commas, so :is(a, b) breaks. */
#k :focus-visible, [role=tab]:focus-visible, .upload-container:focus-visible,
.gallery-item:focus-visible { outline-offset: -2px; }
/* Results: the label above the photos, not over the first row; every result in the page's own
   scroll (gradio's height="auto" is a 55vh box that hid the third row in a scrollbar of its own) */
#results label.float { position: static; margin: var(--block-label-margin); }
#results .grid-container { padding-top: 0; }
#results .grid-wrap { max-height: none; }
/* A phone: two result columns (four of 100 px at least made the page wider than the screen) */
@media (max-width: 640px) {
    #results .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)); }
    /* and each tile's label on up to three lines across the tile: on one line, cut at 80% of
       a 140 px tile, it showed the score and four letters of the caption */
    #results .caption-label { left: var(--block-label-margin); max-width: none;
                              white-space: normal; font-size: var(--text-sm);
                              display: -webkit-box; -webkit-box-orient: vertical;
                              -webkit-line-clamp: 3; line-clamp: 3; }
}
"""


@dataclass(frozen=True)
class LoadError:
    """Why no Searcher could be loaded; ``message`` is shown on the page. ``transient``: the
    Hub or the network failed (``is_transient``), so loading is tried again (SearcherSlot)."""

    message: str
    transient: bool = False


class SearcherSlot:
    """The app's Searcher, or why there is none, as each query reads it (``value``).

    ``keep_loading``: after a load that the Hub or the network failed, load again every
    RELOAD_EVERY_S in the background until it loads or fails for another reason, so an outage
    that outlasts ``load_searcher``'s own tries does not leave the Space unavailable until
    someone restarts it. A loaded Searcher is never replaced.
    """

    def __init__(self, value: Searcher | LoadError):
        self.value = value

    def keep_loading(self, load: Callable[[], Searcher | LoadError]) -> threading.Thread | None:
        if not (isinstance(self.value, LoadError) and self.value.transient):
            return None

        def retry() -> None:
            while isinstance(self.value, LoadError) and self.value.transient:
                time.sleep(RELOAD_EVERY_S)
                self.value = load()

        thread = threading.Thread(target=retry, name="searcher-reload", daemon=True)
        thread.start()
        return thread


def load_searcher(env: Mapping[str, str] | None = None) -> Searcher | LoadError:
    """Load the Searcher named by DATASET_REPO / DATASET_REVISION, or say (and log) why not."""
    env = os.environ if env is None else env
    repo = (env.get("DATASET_REPO") or "").strip()
    revision = (env.get("DATASET_REVISION") or "").strip() or None
    if not repo:
        return _load_failed(
            "DATASET_REPO ayarlanmamış. Space ayarlarında (Settings → Variables) DATASET_REPO "
            "değişkenine yayımlanmış veri kümesinin adını (KULLANICI/AD) yazın; yerelde: "
            "`DATASET_REPO=KLASÖR python app.py`."
        )
    where = f"{repo}@{revision}" if revision else repo
    started = time.perf_counter()
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        try:
            searcher = Searcher.from_repo(repo, revision, image_max_side=GALLERY_MAX_SIDE)
            break
        except Exception as err:  # any failure must still leave a running app (see top)
            if attempt == LOAD_ATTEMPTS or not is_transient(err):
                return _load_error(err, where, transient=is_transient(err))
            wait = LOAD_BACKOFF_S * 2 ** (attempt - 1)
            said = describe_error(err)
            log.warning("loading %s failed (%s); trying again in %g s", where, said, wait)
            time.sleep(wait)
    log.info(
        "loaded %s: %d images, model %s, in %.1f s",
        searcher.location,
        len(searcher),
        searcher.manifest.model_id,
        time.perf_counter() - started,
    )
    return searcher


def _load_error(err: Exception, where: str, transient: bool = False) -> LoadError:
    if transient:  # the Hub's own English error (a URL, hundreds of characters) is for the log
        # "The Hub cannot be reached now; the app tries again every N seconds (where: HTTP 503)."
        every = f"{RELOAD_EVERY_S:g} saniyede bir"
        return _load_failed(
            f"Hub'a şu an ulaşılamıyor; uygulama {every} yeniden deniyor "
            f"({where}: {transient_cause(err)}).",
            exc_info=err,
            transient=True,
        )
    if isinstance(err, ModelMismatchError):
        return _load_failed(f"Model ile arama dizini uyuşmuyor ({where}): {err}")
    if isinstance(err, SearchSetupError):
        return _load_failed(f"Veri kümesi ya da arama dizini kullanılamıyor ({where}): {err}")
    first_line = str(err).splitlines()[0] if str(err) else ""
    return _load_failed(
        f"Arama dizini yüklenemedi ({where}): {type(err).__name__}: {first_line}",
        exc_info=err,
    )


def is_transient(err: BaseException | None) -> bool:
    """Whether a failure, or one it was raised from, is the Hub's or the network's for a moment:
    a dropped or timed-out connection, or an answer ``is_transient_status`` names (read through
    ``raise ... from None``)."""
    return transient_cause(err) is not None


def transient_cause(err: BaseException | None) -> str | None:
    """What makes a failure the Hub's or the network's for a moment (``is_transient``), in a
    few words for the page: ``"HTTP 503"``, or the connection error's type (``"ConnectError"``);
    None when nothing does."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, transport_errors()):
            return type(err).__name__
        status = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(status, int) and is_transient_status(status):
            return f"HTTP {status}"
        err = err.__cause__ or err.__context__
    return None


def _load_failed(
    message: str, exc_info: BaseException | None = None, transient: bool = False
) -> LoadError:
    log.error("search is unavailable: %s", message, exc_info=exc_info)
    return LoadError(message, transient)


class ResultFolder:
    """Result images as JPEG files in ``folder``, each written once; at most about ``max_bytes``.

    Handing gradio a PIL image makes it encode the image and write it to a path named by the
    content hash, with a truncating write, on every response: a second request returning the
    same image truncated the file while the first response was still streaming it ("Too little
    data for declared Content-Length"). Here each image is written once, under a temporary name,
    then renamed into place (atomic), and an existing file is never rewritten. The folder is
    inside gradio's upload folder, so gradio serves the path as it is (no copy, no re-encode)
    and it stays among the files the app created: nothing else on the server becomes reachable.

    Each file's access time records when it was last shown. When a new file takes the folder
    past ``max_bytes``, the least recently shown files go down to 80% of it, except those shown
    in the last ``keep_s`` seconds (the bound is then exceeded for a while). Deleting a file
    that a response is still streaming is safe: the open file lives on until it is closed.
    """

    def __init__(self, folder: Path, max_bytes: int, keep_s: float):
        self.folder, self.max_bytes, self.keep_s = Path(folder), max_bytes, keep_s
        # One lock for every look at the folder: a file found and shown again is never one that
        # a concurrent prune is deleting.
        self._lock = threading.Lock()
        self._bytes: int | None = None  # the files' total, counted on the first write
        # When a prune could not get under the bound (all shown within keep_s), the next one
        # waits until the oldest of those leaves that window: not a rescan of every file per write.
        self._prune_after_ns = 0

    def path_for(self, image) -> str:
        """The path of ``image`` as a JPEG in the folder, written there at most once."""
        buffer = io.BytesIO()
        rgb = image if image.mode == "RGB" else image.convert("RGB")  # hits are RGB already
        rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        data = buffer.getvalue()
        path = self.folder / f"{hashlib.sha256(data).hexdigest()}.jpg"
        with self._lock:
            try:
                os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))  # shown again
                return str(path)
            except FileNotFoundError:
                pass
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, staging = tempfile.mkstemp(dir=self.folder, prefix=".partial-", suffix=".jpg")
            try:
                with os.fdopen(fd, "wb") as sink:
                    sink.write(data)
                os.replace(staging, path)
            except BaseException:
                Path(staging).unlink(missing_ok=True)
                raise
            if self._bytes is None:
                self._bytes = sum(size for _, size, _ in self._files())
            else:
                self._bytes += len(data)
            if self._bytes > self.max_bytes and time.time_ns() >= self._prune_after_ns:
                self._bytes = self._prune()
        return str(path)

    def _files(self) -> list[tuple[int, int, Path]]:
        """(last shown, bytes, path) of each result file."""
        out = []
        for path in self.folder.glob("*.jpg"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                out.append((stat.st_atime_ns, stat.st_size, path))
        return out

    def _prune(self) -> int:
        """Delete the least recently shown files down to 80% of the bound; the bytes left."""
        files = sorted(self._files())
        total = sum(size for _, size, _ in files)
        keep_ns = int(self.keep_s * 1e9)
        recent = time.time_ns() - keep_ns
        for shown, size, path in files:
            if total <= 0.8 * self.max_bytes:
                break
            if shown > recent:
                self._prune_after_ns = shown + keep_ns
                break
            path.unlink(missing_ok=True)
            total -= size
        return total


def sweep_uploads(paths, keep_s: float, folder: Path) -> set[str]:
    """Delete the files of ``paths`` (uploads this app took in, inside ``folder``, gradio's
    upload folder) not used for ``keep_s`` seconds, and the folder gradio made for each when
    that leaves it empty; the paths deleted or already gone. Used means changed: an upload is
    touched whenever a search reads it (QueryImage). Nothing else in the folder is touched:
    other apps may share it, and the result images are ResultFolder's."""
    cutoff, gone = time.time() - keep_s, set()
    for name in paths:
        path = Path(name)
        if not is_in_or_equal(path, folder) or is_in_or_equal(path, Path(folder) / RESULTS_FOLDER):
            continue
        try:
            if path.lstat().st_ctime >= cutoff:
                continue
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            continue
        gone.add(name)
        if path.parent != Path(folder):  # gradio's folder for it, named by the upload's hash
            with contextlib.suppress(OSError):  # not empty: another upload shares it
                path.parent.rmdir()
    return gone


def _sweep_uploads_forever(demo: gr.Blocks) -> None:
    folder = Path(get_upload_folder())
    # What gradio records as taken in: /gradio_api/upload's files, and those an image input
    # fetched or decoded (its temp_files; QueryImage adds the base64 ones).
    taken = [demo.upload_file_set]
    taken += [block.temp_files for block in demo.blocks.values() if isinstance(block, QueryImage)]
    # A gallery notes the path of every result image it ever showed, and gradio never lets go
    # of one: paths ResultFolder has deleted are dropped here, or the sets grow for the
    # Space's life by one path per distinct image shown.
    shown = [block.temp_files for block in demo.blocks.values() if isinstance(block, gr.Gallery)]
    while True:
        time.sleep(UPLOADS_SWEEP_S)
        try:
            deleted = 0
            for files in taken:
                gone = sweep_uploads(files.copy(), UPLOADS_KEEP_S, folder)  # (copy: atomic)
                files.difference_update(gone)
                deleted += len(gone)
            for files in shown:
                files.difference_update([p for p in files.copy() if not os.path.lexists(p)])
        except Exception:  # noqa: BLE001 - the next round tries again
            log.exception("sweeping the uploads in %s failed", folder)
            continue
        if deleted:
            log.info("deleted %d uploads not used for %d s", deleted, UPLOADS_KEEP_S)


_result_folder: ResultFolder | None = None
_result_folder_lock = threading.Lock()


def result_image_file(image) -> str:
    """The path of ``image`` as a JPEG in the app's result folder (ResultFolder.path_for)."""
    global _result_folder
    with _result_folder_lock:
        if _result_folder is None:
            folder = Path(get_upload_folder()) / RESULTS_FOLDER
            _result_folder = ResultFolder(folder, RESULTS_MAX_BYTES, RESULTS_KEEP_S)
    return _result_folder.path_for(image)


def hits_to_outputs(hits) -> tuple[list, list[dict]]:
    """Gallery items ((image file, caption) pairs) and the plain-JSON results for Hits."""
    gallery, results = [], []
    for hit in hits:
        caption = hit.captions[0] if hit.captions else ""
        # The score first: the gallery cuts a long label at the tile's width (on a phone
        # after three lines, CSS), and the short score must stay visible.
        label = f"{hit.score:.3f} · {caption}" if caption else f"{hit.score:.3f}"
        if hit.image_error:  # the Searcher gave a placeholder: the search still answers
            label += " · ⚠️ görsel yüklenemedi"
        gallery.append((result_image_file(hit.image), label))
        results.append(
            {
                "caption": caption,
                "captions": list(hit.captions),
                "score": round(float(hit.score), 6),
                "image_score": round(float(hit.image_score), 6),
                "caption_score": (
                    None if hit.caption_score is None else round(float(hit.caption_score), 6)
                ),
                "row": int(hit.row),
                "image_id": hit.image_id,
                "image_error": hit.image_error,
            }
        )
    return gallery, results


def photo_name(row: int, captions) -> str:
    """How a status line names a photo of the collection: ``#row “its first caption”`` (the row
    as its "Benzerlerini bul (#row)" button shows it), the caption on one line and cut at a word
    to STATUS_CAPTION_CHARS; ``#row`` alone for a photo without captions. The status is
    Markdown, so the caption's Markdown marks come backslash-escaped (API callers see them)."""
    caption = " ".join(captions[0].split()) if captions else ""
    if not caption:
        return f"#{row}"
    if len(caption) > STATUS_CAPTION_CHARS:
        cut = caption[: STATUS_CAPTION_CHARS - 1]
        if caption[len(cut)] != " " and " " in cut:  # (a word that ends at the cut is whole)
            cut = cut.rsplit(" ", 1)[0]
        caption = cut.rstrip() + "…"
    # The status is Markdown: a caption's "*", "_" or "[..](..)" is shown, not rendered.
    caption = _MARKDOWN_INLINE.sub(r"\\\1", caption)
    return f"#{row} “{caption}”"


def on_gpu(fn):
    """``@spaces.GPU`` where the ``spaces`` package is installed (ZeroGPU), else ``fn`` as is."""
    return fn if spaces is None else spaces.GPU(fn)


def parse_query(text: str | None) -> tuple[list[str], list[str]]:
    """Split a composed query into its positive and negative text terms.

    ``"köpek + kar - şehir"`` gives ``(["köpek", "kar"], ["şehir"])``. Only a ``+`` or ``-``
    with whitespace on both sides (or at the start of the query) is an operator, so hyphens
    inside Turkish text stay text: ``"Kuzey-Batı"``, ``"15-20 yaş"``, ``"-5 derece"``. A query
    without operators is one positive term, exactly as typed (stripped). A query may start with
    an operator (``"- kar"``) when an image beside it is the positive term. An operator with no
    term after it is a ValueError that says so.
    """
    text = (text or "").strip()
    if not text:
        return [], []
    parts = OPERATOR.split(text)
    positive = [parts[0].strip()] if parts[0].strip() else []
    negative: list[str] = []
    for op, term in zip(parts[1::2], parts[2::2], strict=True):
        term = term.strip()
        if not term:
            raise ValueError(
                f"“{op}” işaretinden sonra bir terim yazın (ör. “köpek + kar - şehir”); "
                "tire metnin parçasıysa boşluksuz yazın (ör. “Kuzey-Batı”)."
            )
        (positive if op == "+" else negative).append(term)
    return positive, negative


def share_url(base: str, query: str, k, deep: bool, alpha) -> str:
    """The link that reruns a text search: ``base?q=...&k=...`` (+ ``deep``, ``alpha``)."""
    params = {"q": query.strip(), "k": int(k)}
    if deep:
        params.update(deep="1", alpha=f"{float(alpha):g}")
    return f"{base.rstrip('/')}/?{urllib.parse.urlencode(params)}"


def public_base_url(request: gr.Request | None, env: Mapping[str, str] | None = None) -> str:
    """The Space's public address (SPACE_HOST, set by Spaces), else the request's own base URL."""
    env = os.environ if env is None else env
    host = (env.get("SPACE_HOST") or "").strip()
    if host:
        return f"https://{host}/"
    try:
        return str(request.base_url) if request is not None else ""
    except AttributeError:
        return ""


def settings_from_link(params: Mapping[str, str]) -> dict | None:
    """The search a share link asks for (``q``, ``k``, ``deep``, ``alpha``), or None without ``q``.

    Values are passed on as given when they do not parse, so the search answers with its own
    message about them instead of the page silently using something else.
    """
    query = (params.get("q") or "").strip()
    if not query:
        return None
    k: int | str = params.get("k") or DEFAULT_RESULTS
    with contextlib.suppress(ValueError):
        k = int(k)
    deep = (params.get("deep") or "").strip().lower() in ("1", "true", "yes", "evet", "on")
    alpha: float | str = params.get("alpha") or DEFAULT_ALPHA
    with contextlib.suppress(ValueError):
        alpha = float(alpha)
    return {"query": query, "k": k, "deep": deep, "alpha": alpha}


def make_handlers(searcher: Searcher | LoadError | SearcherSlot):
    """The four API functions, bound to one Searcher (or to the reason there is none), or to a
    SearcherSlot, read at each call.

    Their parameter names are the API's parameter names, and their docstrings its description
    (and the MCP tools' descriptions; gradio reads each line under "Returns:" as one output).
    Known problems of /search, /search_image and /search_similar come back as the status
    message with an empty gallery, never as an error: a gradio_client caller and the page both
    see the same Turkish sentence. /embed has no status output, so it raises ``gr.Error`` with
    that sentence. (A k, alpha or row that is not a number never reaches these functions
    through the API: their inputs refuse it first with a Turkish ``gr.Error``, as gradio
    refuses one outside a slider's range, in its own words; a fractional row is rounded by its
    ``RowNumber(precision=0)``.)
    """

    slot = searcher if isinstance(searcher, SearcherSlot) else SearcherSlot(searcher)

    # Only the encoder runs inside @spaces.GPU (ZeroGPU bills and queues GPU time per call); the
    # FAISS search, the re-scoring of its candidates and the gallery's JPEGs run on the CPU.
    @on_gpu
    def encode_on_device(texts: list[str], images: list[str]) -> list[np.ndarray]:
        encoder = slot.value.encoder  # a Searcher: each handler checks before it encodes
        vectors = [encoder.encode_texts([text])[0] for text in texts]
        return vectors + [encoder.encode_images([image])[0] for image in images]

    def encode_terms(texts: list[str], images: list[str] = ()) -> list[np.ndarray]:
        return encode_on_device(list(texts), list(images))

    def unavailable(searcher: LoadError):
        return [], [], f"⚠️ Arama kullanılamıyor: {searcher.message}"

    def check_k(k) -> int | None:
        try:
            k = int(k)
        except (TypeError, ValueError):
            return None
        return k if 1 <= k <= MAX_RESULTS else None

    def bad_k(k):
        return [], [], f"⚠️ Sonuç sayısı 1 ile {MAX_RESULTS} arasında olmalı (verilen: {k})."

    def too_long(text: str) -> str:
        return f"Metin en çok {MAX_QUERY_CHARS} karakter olabilir ({len(text)})."

    def run(query_fn, what: str, subject: Callable[[], str] | None = None):
        """Answer ``query_fn``'s hits, or say why not; ``subject``: what was searched for, at
        the head of the status (read after the search)."""
        started = time.perf_counter()
        try:
            hits = query_fn()
            # Writes the result images: a full disk fails here, and is answered as any failure.
            gallery, results = hits_to_outputs(hits)
            said = f"{subject()} · " if subject else ""
        except ImageLoadError as err:  # never the name: it is a path on this server
            return [], [], f"⚠️ Görsel açılamadı: {IMAGE_ERRORS.get(err.kind, err.reason)}."
        except RowMovedError:
            return [], [], f"⚠️ {ROW_MOVED}"
        except ValueError as err:
            return [], [], f"⚠️ {err}"
        except Exception:
            log.exception("search failed for %s", what)
            return [], [], "⚠️ Beklenmeyen bir hata oluştu; ayrıntı sunucu günlüğünde."
        elapsed = (time.perf_counter() - started) * 1000
        return gallery, results, f"{said}{len(results)} sonuç · {elapsed:.0f} ms"

    def search(
        query: str,
        k: int = DEFAULT_RESULTS,
        deep: bool = False,
        alpha: float = DEFAULT_ALPHA,
        image: str | None = None,
    ):
        """Search the photo collection with a Turkish text (optionally composed, plus an image).

        Write what the photos should show, in Turkish, e.g. "karda oynayan köpekler" (dogs
        playing in the snow). Combine terms with " + " and " - " (spaces around them):
        "köpek + kar - şehir" finds dogs and snow, away from the city. A hyphen without spaces
        ("Kuzey-Batı", "15-20 yaş") is part of the text.

        Args:
            query: the Turkish text, e.g. "karda oynayan köpekler", or a composed query
            k: how many results, 1-30
            deep: Deep Search: score by the images and their captions together
            alpha: with deep=True, 0 = captions only, 1 = images only
            image: optional image added as a positive term (a file or URL)
        Returns:
            the gallery: image URLs, each labelled "score · caption"
            JSON results, best first: caption, captions, score, image_score, caption_score, row,
            image_id (the photo's id, which stays across dataset updates), image_error (null,
            or why the image is a grey placeholder)
            a one-line Turkish status
        """
        searcher = slot.value
        if isinstance(searcher, LoadError):
            return unavailable(searcher)
        n = check_k(k)
        if n is None:
            return bad_k(k)
        if not isinstance(deep, bool) and deep is not None:  # the string "false" is true
            return [], [], f"⚠️ deep true ya da false olmalı (verilen: {str(deep)[:40]!r})."
        if isinstance(query, str) and len(query) > MAX_QUERY_CHARS:
            return [], [], f"⚠️ {too_long(query)}"
        if isinstance(query, str) and not is_valid_unicode(query):
            return [], [], f"⚠️ {NOT_UNICODE}"
        try:
            weight = float(alpha) if deep else None
        except (TypeError, ValueError):
            weight = -1.0
        if weight is not None and not 0.0 <= weight <= 1.0:
            return [], [], f"⚠️ Denge (alpha) 0 ile 1 arasında olmalı (verilen: {alpha})."
        try:
            positive, negative = parse_query(query if isinstance(query, str) else "")
        except ValueError as err:
            return [], [], f"⚠️ {err}"
        images = [image] if image else []
        if len(positive) + len(negative) + len(images) > MAX_TERMS:
            return [], [], f"⚠️ Bir sorguda en çok {MAX_TERMS} terim olabilir."
        if not positive and not images:
            if negative:
                return [], [], "⚠️ En az bir artı terim gerekir (ör. “köpek - kar”)."
            return [], [], "✍️ Lütfen bir arama metni yazın (ör. “karlı dağlar”)."

        def query_fn():
            vectors = encode_terms(positive + negative, images)
            plus = vectors[: len(positive)] + vectors[len(positive) + len(negative) :]
            minus = vectors[len(positive) : len(positive) + len(negative)]
            try:
                vector = compose_vectors(plus, minus)
            except ValueError:
                raise ValueError(
                    "Terimler birbirini götürüyor; eksi (-) terimlerden birini çıkarın."
                ) from None
            return searcher.search_vector(vector, n, alpha=weight)

        return run(query_fn, repr(query))

    def search_image(image: str | None, k: int = DEFAULT_RESULTS):
        """Search the photo collection with an image: the photos that look most like it.

        Args:
            image: the query image (a file; gradio_client: handle_file(path_or_url))
            k: how many results, 1-30
        Returns:
            the gallery: image URLs, each labelled "score · caption"
            JSON results, best first, as search gives them
            a one-line Turkish status
        """
        searcher = slot.value
        if isinstance(searcher, LoadError):
            return unavailable(searcher)
        if not image:
            return [], [], "🖼️ Lütfen önce bir görsel yükleyin."
        n = check_k(k)
        if n is None:
            return bad_k(k)
        return run(lambda: searcher.search_vector(encode_terms([], [image])[0], n), "an image")

    def search_similar(row: int, k: int = DEFAULT_RESULTS, image_id: str | None = None):
        """More like this: the photos that look most like one photo of the collection.

        Args:
            row: the photo's row number, as the "row" field of a result of search
            k: how many results, 1-30 (the photo itself is left out)
            image_id: optional, the "image_id" field of that result: if the dataset was updated
                since and the row holds another photo now, the answer says so instead of
                finding photos like that other one
        Returns:
            the gallery: image URLs, each labelled "score · caption"
            JSON results, best first, as search gives them
            a one-line Turkish status that names the photo: "#row “its caption” görselinin
            benzerleri · N sonuç · T ms"
        """
        searcher = slot.value
        if isinstance(searcher, LoadError):
            return unavailable(searcher)
        if row is None or row == "":
            return [], [], "🖼️ Önce sonuçlardan bir görsel seçin."
        try:
            number = float(row)
        except (TypeError, ValueError, OverflowError):
            number = float("nan")
        if not number.is_integer():
            return [], [], f"⚠️ Satır numarası bir tam sayı olmalı (verilen: {row})."
        expected = image_id if isinstance(image_id, str) and image_id else None
        if expected is None and not 0 <= number < len(searcher):  # (with an id: RowMovedError)
            last = len(searcher) - 1
            return [], [], f"⚠️ Satır numarası 0 ile {last} arasında olmalı (verilen: {number:g})."
        n = check_k(k)
        if n is None:
            return bad_k(k)

        def subject() -> str:  # the page shows only the new results: which photo they are like
            captions = searcher.rows[int(number)]["captions"]  # (the search checked the row)
            return f"{photo_name(int(number), captions)} görselinin benzerleri"

        return run(
            lambda: searcher.search_similar(int(number), n, image_id=expected),
            f"row {row}",
            subject,
        )

    def embed(text: str) -> list[float]:
        """The query embedding of a Turkish text (MultiEmbedTR), to search the index elsewhere.

        The text is one term, embedded as written: "köpek + kar" is not composed as search
        composes it.

        Args:
            text: the Turkish text, e.g. "karlı dağlar"
        Returns:
            the text's embedding: L2-normalised floats, as many as the index's dimension
        """
        searcher = slot.value
        if isinstance(searcher, LoadError):
            raise gr.Error(f"Arama kullanılamıyor: {searcher.message}")
        if not isinstance(text, str) or not text.strip():
            raise gr.Error("Lütfen bir metin verin (ör. “karlı dağlar”).")
        if len(text) > MAX_QUERY_CHARS:
            raise gr.Error(too_long(text))
        if not is_valid_unicode(text):
            raise gr.Error(NOT_UNICODE)
        try:
            (vector,) = encode_terms([text.strip()])
        except ValueError as err:
            raise gr.Error(str(err)) from None
        return [float(x) for x in vector]

    return search, search_image, search_similar, embed


def checked_number(payload, label: str, optional: bool):
    """An API value for a number input, or a Turkish ``gr.Error``: gradio's own preprocess
    compares a string with the input's range and fails with a TypeError, which reaches the
    caller as an error without a message and the log as a traceback."""
    if payload is None and optional:
        return None
    if isinstance(payload, bool) or not isinstance(payload, (int, float)):
        raise gr.Error(f"“{label}” bir sayı olmalı (verilen: {str(payload)[:40]!r}).")
    if isinstance(payload, int) and abs(payload) > 2**53 or not math.isfinite(payload):
        shown = f"{payload:.3g}" if isinstance(payload, float) else f"{len(str(payload))} basamak"
        raise gr.Error(f"“{label}” çok büyük ya da sonsuz (verilen: {shown}).")
    return payload


class NumberSlider(gr.Slider):
    """``gr.Slider`` that refuses an API value that is not a number in Turkish (checked_number)."""

    is_template = True  # rendered by gradio's own Slider component

    def preprocess(self, payload):
        return super().preprocess(checked_number(payload, self.label, optional=False))


class RowNumber(gr.Number):
    """``gr.Number`` that refuses an API value that is not a number in Turkish (checked_number);
    empty (None) is no row chosen."""

    is_template = True  # rendered by gradio's own Number component

    def preprocess(self, payload):
        return super().preprocess(checked_number(payload, "row", optional=True))


class QueryImage(gr.Image):
    """``gr.Image`` that passes the uploaded file on untouched; ``open_image`` then checks it.

    gr.Image's own preprocess opens every upload with PIL and, when it is not RGB, decodes it in
    full, converts it and saves it again before the app sees it: a 10000x10000 one-bit PNG of a
    few KB cost seconds of CPU and hundreds of MB there (a decompression-bomb amplifier), and a
    file that is not an image failed with a bare "Error". Here the path goes straight to
    ``search_image``, where ``open_image`` refuses bombs from the header, before decoding, and
    any unreadable file comes back as a status line that names it. (Gradio writes a type stub,
    app.pyi, beside any module that defines a component; it is git-ignored.)
    """

    is_template = True  # rendered by gradio's own Image component

    async def async_move_resource_to_block_cache(self, url_or_file_path):
        # gradio fetches an image URL (gradio_client's handle_file(url), an MCP tool's image)
        # here, before preprocess, and refuses a loopback, private or link-local address, or a
        # name that does not resolve, with a ValueError that callers got as a bare error, and a
        # URL that answers with an error with a bare Exception.
        try:
            return await super().async_move_resource_to_block_cache(url_or_file_path)
        except Exception as err:
            if not str(url_or_file_path).startswith(("http://", "https://")):
                raise
            if isinstance(err, ValueError):
                raise gr.Error(URL_NOT_FETCHED) from None
            # "The image could not be fetched from that address (...)".
            raise gr.Error(
                f"Görsel alınamadı: adres indirilemedi ({str(err)[:120]}); herkese açık bir "
                "görsel adresi verin ya da görseli yükleyin."
            ) from None

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            # Checked strictly first: gradio's decoder drops what is not base64, so "@@@@" or
            # "====" became an empty file ("dosya boş"), the visitor's mistake hidden.
            _, comma, data = payload.url.rpartition(",")
            try:
                decoded = comma and base64.b64decode("".join(data.split()), validate=True)
            except ValueError:  # (binascii.Error)
                decoded = b""
            if not decoded:
                raise gr.Error(f"Görsel açılamadı: base64 verisi geçersiz ya da boş; {BASE64_FIX}.")
            # a file of the bytes as sent (not decoded as an image and saved again)
            path = processing_utils.save_base64_to_cache(payload.url, self.GRADIO_CACHE)
            self.temp_files.add(path)  # taken in: swept like an upload
            return path
        if not payload.path:  # a bare URL that gradio did not fetch: not silently no image
            raise gr.Error(
                "Görsel alınamadı: yalnız bir adres geldi; görseli yükleyin "
                "(gradio_client: handle_file(yol_ya_da_adres))."
            )
        # Gradio keeps a path to its upload folder only when the payload is tagged
        # meta={"_type": "gradio.FileData"}; untagged, the path came as the visitor sent it,
        # and a server file must not be read (nor its existence told) for a visitor.
        if not is_in_or_equal(payload.path, self.GRADIO_CACHE):  # (both resolved: no ../)
            raise gr.Error("Görsel alınamadı: yalnız yüklenen görseller aranabilir; yükleyin.")
        try:  # used now: the upload sweep keeps it another UPLOADS_KEEP_S
            os.utime(payload.path)
        except FileNotFoundError:
            raise gr.Error(
                "Görsel artık sunucuda yok (bir saattir kullanılmadı); yeniden yükleyin."
            ) from None
        return payload.path


def _banner(searcher: Searcher | LoadError) -> dict:
    """The line under the title, as the Markdown's arguments: what is searched, or why nothing
    can be (framed in red)."""
    if isinstance(searcher, LoadError):
        text = f"⚠️ **Arama kullanılamıyor.** {searcher.message}"
        return {"value": text, "elem_classes": ["load-error"]}
    count = f"{len(searcher):,}".replace(",", ".")
    model, where = searcher.manifest.model_id, searcher.location
    return {
        "value": f"<small>{count} görsel · model `{model}` · veri `{where}`</small>",
        "elem_classes": [],
    }


def build_app(searcher: Searcher | LoadError | SearcherSlot) -> gr.Blocks:
    """The Blocks UI around one loaded Searcher (or the reason loading failed), or around a
    SearcherSlot that may load later; queue set.

    Theme and CSS are launch() arguments in gradio 6: start it with ``launch(demo, ...)``.
    """
    slot = searcher if isinstance(searcher, SearcherSlot) else SearcherSlot(searcher)
    search, search_image, search_similar, embed = make_handlers(slot)
    with gr.Blocks(title=f"{TITLE} · Türkçe görsel arama") as demo:
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}", elem_id="title")
        first = slot.value
        banner = gr.Markdown(**_banner(first), elem_id="source")
        if isinstance(first, LoadError) and first.transient:  # a page opened later says more
            demo.load(
                lambda: gr.update(**_banner(slot.value)),
                outputs=banner,
                api_visibility="private",
                queue=False,
            )
        with gr.Tabs():
            with gr.Tab("Metinle ara", id="text"):
                with gr.Row(equal_height=True):
                    query = gr.Textbox(
                        label="Ne arıyorsunuz?",
                        placeholder="ör. karda oynayan köpekler (Enter ile arayın)",
                        lines=1,
                        max_lines=1,
                        autofocus=True,
                        scale=6,
                        # Narrower, a query cannot be read: the row wraps, "Ara" goes under the
                        # box (on a 390 px phone it had 195 px beside the button).
                        min_width=280,
                        elem_id="query",
                    )
                    search_button = gr.Button(
                        "Ara", variant="primary", scale=1, min_width=100, elem_id="search-button"
                    )
                gr.Markdown(
                    "<small>Terimleri birleştirin: `köpek + kar - şehir` (işaretlerin iki yanında "
                    "boşluk; `Kuzey-Batı`, `15-20 yaş` gibi boşluksuz tire metnin parçasıdır). "
                    "İsterseniz yanına bir görsel de ekleyin.</small>",
                    elem_id="syntax",
                )
                examples = gr.Examples(
                    examples=[[q] for q in EXAMPLES],
                    inputs=[query],
                    label="Örnekler",
                    api_visibility="private",
                )
                with gr.Row():
                    deep = gr.Checkbox(
                        label="Derin Arama (Deep Search)",
                        info="Görselleri ve açıklamalarını birlikte puanlar",
                        value=False,
                        scale=1,
                        elem_id="deep",
                    )
                    alpha = NumberSlider(
                        0,
                        1,
                        value=DEFAULT_ALPHA,
                        step=0.05,
                        label="Denge",
                        info="0 = yalnız açıklamalar, 1 = yalnız görseller",
                        visible=False,
                        scale=2,
                        elem_id="alpha",
                    )
                    query_image = QueryImage(
                        type="filepath",
                        label="Görsel ekle (isteğe bağlı, + terim)",
                        sources=["upload", "clipboard"],
                        height=140,
                        scale=2,
                        elem_id="query-image",
                    )
            with gr.Tab("Görselle ara", id="image"), gr.Row():
                image = QueryImage(
                    type="filepath",
                    label="Sorgu görseli",
                    sources=["upload", "clipboard"],
                    height=240,
                    scale=3,
                )
                image_button = gr.Button(
                    "Benzerlerini bul", variant="primary", scale=1, min_width=120
                )
        k = NumberSlider(
            1,
            MAX_RESULTS,
            value=DEFAULT_RESULTS,
            step=1,
            precision=0,
            label="Sonuç sayısı",
            elem_id="k",
        )
        status = gr.Markdown(elem_id="status")
        gallery = gr.Gallery(
            label="Sonuçlar (birine tıklayın: benzerlerini bulabilirsiniz)",
            columns=4,
            height="auto",
            object_fit="cover",
            format="jpeg",
            buttons=["fullscreen"],
            interactive=False,
            elem_id="results",
        )
        with gr.Row():
            # The selected result's row: the input of /search_similar (hidden on the page).
            row = RowNumber(value=None, precision=0, visible=False, elem_id="similar-row")
            picked_id = gr.Textbox(value="", visible=False, elem_id="similar-image-id")
            similar_button = gr.Button(
                "Benzerlerini bul", visible=False, scale=1, elem_id="similar-button"
            )
            share = gr.Textbox(
                label="Bu aramanın bağlantısı",
                interactive=False,
                buttons=["copy"],
                visible=False,
                scale=4,
                elem_id="share-link",
            )
        with gr.Accordion("Sonuçlar (JSON)", open=False):
            results = gr.JSON(show_label=False)

        outputs = [gallery, results, status]
        # One event for Enter and the button, so the API has exactly one /search.
        text_search = gr.on(
            [query.submit, search_button.click],
            search,
            inputs=[query, k, deep, alpha, query_image],
            outputs=outputs,
            api_name="search",
            concurrency_id="queries",  # one limit shared by every kind of query (see top)
        )
        image_search = gr.on(
            [image.upload, image_button.click],
            search_image,
            inputs=[image, k],
            outputs=outputs,
            api_name="search_image",
            concurrency_id="queries",
        )
        similar = similar_button.click(
            search_similar,
            inputs=[row, k, picked_id],
            outputs=outputs,
            api_name="search_similar",
            concurrency_id="queries",
        )
        gr.api(embed, api_name="embed", concurrency_id="queries")
        # An example fills the box and searches it as the button would, with the attached
        # image if there is one; private, so /search stays the one text endpoint.
        examples_search = examples.load_input_event.then(
            search,
            inputs=[query, k, deep, alpha, query_image],
            outputs=outputs,
            api_visibility="private",
            concurrency_id="queries",
        )

        # UI-only events: private, so the four endpoints above are the whole public API.
        def pick(answer, evt: gr.SelectData):
            """A click on a result: remember its row and image id, offer "Benzerlerini bul"."""
            try:
                chosen, image_id = answer[evt.index]["row"], answer[evt.index].get("image_id")
            except (TypeError, IndexError, KeyError, AttributeError):
                return None, "", gr.update(visible=False)
            label = f"Benzerlerini bul (#{chosen})"
            return chosen, image_id or "", gr.update(visible=True, value=label)

        gallery.select(
            pick,
            inputs=results,
            outputs=[row, picked_id, similar_button],
            api_visibility="private",
            queue=False,
        )

        def link(text, n, on, weight, request: gr.Request, picture=None, answer=None):
            """The share link of the text search just run: none with an image (a link cannot
            carry it) and none for a search that failed or found nothing."""
            if not isinstance(text, str) or not text.strip() or picture or not answer:
                return gr.update(visible=False)
            url = share_url(public_base_url(request), text, n, on, weight)
            return gr.update(visible=True, value=url)

        def after_text_search(text, n, on, weight, picture, answer, request: gr.Request):
            # The "Benzerlerini bul (#row)" of a result no longer shown goes too.
            return link(text, n, on, weight, request, picture, answer), gr.update(visible=False)

        for event in (text_search, examples_search):
            event.then(
                after_text_search,
                inputs=[query, k, deep, alpha, query_image, results],
                outputs=[share, similar_button],
                api_visibility="private",
            )
        for event in (image_search, similar):  # results no link can name
            event.then(
                lambda: (gr.update(visible=False), gr.update(visible=False)),
                outputs=[share, similar_button],
                api_visibility="private",
            )
        # "Benzerlerini bul" was clicked from the enlarged preview: close it, so the visitor sees
        # the new results as a grid, not an enlarged stranger in place of the photo they chose.
        # (In the browser: gradio keeps a gallery's preview open across a new value, and an
        # update to selected_index=None does not close it; Escape, as the visitor would press.)
        similar.then(
            None,
            js="() => { document.querySelector('#results .preview')?.dispatchEvent("
            "new KeyboardEvent('keydown', {code: 'Escape', key: 'Escape', bubbles: true})); }",
            api_visibility="private",
            queue=False,
        )

        def from_link(request: gr.Request):
            """Page load: run the search a share link names (?q=...&k=...&deep=...&alpha=...)."""
            params = dict(request.query_params) if request is not None else {}
            settings = settings_from_link(params)
            if settings is None:
                return [gr.update()] * 8
            answer = search(**settings)
            text, n, on = settings["query"], settings["k"], settings["deep"]
            valid_k = isinstance(settings["k"], int) and 1 <= settings["k"] <= MAX_RESULTS
            weight = settings["alpha"]
            valid_alpha = isinstance(weight, float) and 0.0 <= weight <= 1.0
            return [
                settings["query"],
                settings["k"] if valid_k else gr.update(),
                settings["deep"],
                gr.update(value=weight, visible=settings["deep"])
                if valid_alpha
                else gr.update(visible=settings["deep"]),
                *answer,
                link(text, n, on, weight, request, answer=answer[1])
                if valid_k and (valid_alpha or not settings["deep"])
                else gr.update(visible=False),
            ]

        demo.load(
            from_link,
            outputs=[query, k, deep, alpha, *outputs, share],
            api_visibility="private",
            concurrency_id="queries",
        )
        deep.change(
            lambda on: gr.update(visible=on),
            inputs=deep,
            outputs=alpha,
            api_visibility="private",
            queue=False,
        )
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE)
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """``demo.launch`` with this app's theme, CSS, upload limit and sweep, and MCP server.

    Gradio serves only what it created or was uploaded (its cache, where the result images are
    written too) and the app adds no ``allowed_paths``: the dataset, the index files and the
    source are never reachable through its file routes (tests/test_security.py).

    ``mcp_server=True``: the public API functions (search, search_image, search_similar,
    embed) are also MCP tools, at ``/gradio_api/mcp/`` (streamable HTTP) and
    ``/gradio_api/mcp/sse``, described by their docstrings; the schema is at
    ``/gradio_api/mcp/schema``. Needs gradio's ``mcp`` extra (space/requirements.txt); without
    it the app starts without the tools and logs why.
    """
    kwargs.setdefault("max_file_size", MAX_UPLOAD)
    sweep = threading.Thread(target=_sweep_uploads_forever, args=(demo,), daemon=True)
    sweep.start()
    if "mcp_server" not in kwargs:
        # gradio refuses to start with mcp_server=True when its mcp extra is missing: a local
        # run without it still serves the page and the API, and says why there are no tools.
        kwargs["mcp_server"] = importlib.util.find_spec("mcp") is not None
        if not kwargs["mcp_server"]:
            log.warning("no MCP tools: the mcp package is missing (pip install 'gradio[mcp]')")
    return demo.launch(theme=THEME, css=CSS, **kwargs)


def main() -> None:
    import imagesearchtr

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # FAISS tries its AVX-512 and AVX2 builds first and logs each miss at INFO ("Could not load
    # library with AVX512 support"), which reads as a failure in the Space's logs; it is not.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    log.info("imagesearchtr %s from %s", imagesearchtr.__version__, imagesearchtr.__file__)
    if spaces is not None:
        log.info("spaces is installed: queries run inside @spaces.GPU (ZeroGPU): their encode only")
    # Server address and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (read by
    # gradio); never share=True: a Space is already public, and a tunnel would bypass it.
    slot = SearcherSlot(load_searcher())
    slot.keep_loading(load_searcher)
    launch(build_app(slot))


if __name__ == "__main__":
    main()
