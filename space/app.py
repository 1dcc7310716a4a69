"""ImageSearchTR Space: a Turkish text or a photo in, the closest photos of a dataset out.

Reads, from the environment only:
    DATASET_REPO      a Hub dataset id (USER/NAME) or a local folder written by
                      ``python -m pipeline publish`` (rows, FAISS indices, index/manifest.json)
    DATASET_REVISION  optional branch, tag or commit of that repo (``publish-space`` pins the
                      commit it was published against, so a later push cannot break the Space)
and through ``Searcher.from_repo`` the dataset's rows, indices and manifest plus the model the
manifest names (Hub cache). Writes nothing of its own; gradio keeps the shown images in its
temporary cache.

The Searcher is loaded once, when the app starts. If that fails (no DATASET_REPO, a missing or
corrupt index, a manifest that does not match the rows, a model that is not the one that built
the index) the app still starts, shows the reason on the page and logs it once: a Space that
crashes at start-up restarts in a loop and shows only "Runtime error".

Public API (gradio_client); the first two answer (gallery, results, status):
    /search(query, k, deep, alpha)   text query; deep=True fuses image and caption scores,
                                     alpha * image + (1 - alpha) * caption
    /search_image(image, k)          image as query
    /embed(text)                     the text's query embedding: a list of floats (L2-normalised),
                                     to search the dataset's FAISS index elsewhere without torch
``results`` is plain JSON: [{caption, captions, score, image_score, caption_score, row}, ...]
best first; ``status`` is a one-line Turkish message (a result count, or what went wrong).

GPU: on ZeroGPU hardware the Space installs the ``spaces`` package (publish-space puts it in
requirements.txt only for ZeroGPU), and every query runs inside ``@spaces.GPU``, which ZeroGPU
requires around GPU work; the decorator does nothing outside ZeroGPU, and where the package is
not installed (CPU and dedicated-GPU Spaces, local runs) the functions run as they are.

Run locally: ``DATASET_REPO=USER/NAME python space/app.py`` (GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT, read by gradio itself, choose the address).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

try:  # before torch is imported: ZeroGPU patches torch's CUDA start-up when spaces loads
    import spaces
except ImportError:  # not on ZeroGPU hardware (see the module docstring)
    spaces = None

import gradio as gr
from gradio import processing_utils

from imagesearchtr import ImageLoadError, ModelMismatchError, Searcher, SearchSetupError

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
# /embed refuses longer texts: the model reads 128 tokens, so more only costs tokenizer time.
MAX_EMBED_CHARS = 2000
DEFAULT_RESULTS = 10
DEFAULT_ALPHA = 0.6

# One query is a ~50-100 ms text (or image) encode, in which torch already uses every core,
# then single-threaded work: FAISS search, decoding and re-encoding the shown JPEGs for the
# gallery. Two at a time keeps both cores of a free CPU Space busy (one encoding while the
# other prepares its gallery); more would only make every query slower and raise peak memory.
# Further requests wait in the queue, which is bounded so that a burst gets a clear "queue is
# full" instead of minutes of waiting.
CONCURRENCY_LIMIT = 2
QUEUE_MAX_SIZE = 64
# Uploads larger than this are refused by gradio (HTTP 413) before they reach the disk: a query
# photo needs far less (a 64-megapixel JPEG, the decoder's limit, is ~10-30 MB).
MAX_UPLOAD = "50mb"

THEME = gr.themes.Soft(primary_hue="red", secondary_hue="indigo", neutral_hue="slate")
CSS = """
.gradio-container { max-width: 1100px !important; margin: auto; }
#title h1 { margin-bottom: 0; }
#title p { margin-top: 4px; opacity: 0.8; }
#load-error { border: 1px solid #dc2626; border-radius: 8px; padding: 4px 12px;
              background: rgba(220, 38, 38, 0.08); }
#search-button { align-self: end; }
"""


@dataclass(frozen=True)
class LoadError:
    """Why no Searcher could be loaded; ``message`` is shown on the page."""

    message: str


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
    try:
        searcher = Searcher.from_repo(repo, revision)
    except ModelMismatchError as err:
        return _load_failed(f"Model ile arama dizini uyuşmuyor ({where}): {err}")
    except SearchSetupError as err:
        return _load_failed(f"Veri kümesi ya da arama dizini kullanılamıyor ({where}): {err}")
    except Exception as err:  # any other failure must still leave a running app (see top)
        first_line = str(err).splitlines()[0] if str(err) else ""
        return _load_failed(
            f"Arama dizini yüklenemedi ({where}): {type(err).__name__}: {first_line}",
            exc_info=True,
        )
    log.info(
        "loaded %s: %d images, model %s, in %.1f s",
        searcher.location,
        len(searcher),
        searcher.manifest.model_id,
        time.perf_counter() - started,
    )
    return searcher


def _load_failed(message: str, exc_info: bool = False) -> LoadError:
    log.error("search is unavailable: %s", message, exc_info=exc_info)
    return LoadError(message)


def hits_to_outputs(hits) -> tuple[list, list[dict]]:
    """Gallery items ((image, caption) pairs) and the plain-JSON results for a list of Hits."""
    gallery, results = [], []
    for hit in hits:
        caption = hit.captions[0] if hit.captions else ""
        # The score first: the gallery cuts long captions at the tile's width.
        label = f"{hit.score:.3f} · {caption}" if caption else f"{hit.score:.3f}"
        gallery.append((hit.image, label))
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
            }
        )
    return gallery, results


def on_gpu(fn):
    """``@spaces.GPU`` where the ``spaces`` package is installed (ZeroGPU), else ``fn`` as is."""
    return fn if spaces is None else spaces.GPU(fn)


def make_handlers(searcher: Searcher | LoadError):
    """The three API functions, bound to one Searcher (or to the reason there is none).

    Their parameter names are the API's parameter names, and their docstrings its description.
    Known problems of /search and /search_image come back as the status message with an empty
    gallery, never as an error: a gradio_client caller and the page both see the same Turkish
    sentence. /embed has no status output, so it raises ``gr.Error`` with that sentence.
    """

    # The query encoder runs inside these (the Searcher encodes, then searches with FAISS).
    @on_gpu
    def text_on_device(query: str, n: int, weight: float | None):
        return searcher.search_text(query, n, alpha=weight)

    @on_gpu
    def image_on_device(image: str, n: int):
        return searcher.search_image(image, n)

    @on_gpu
    def embed_on_device(text: str):
        return searcher.encoder.encode_texts([text])[0]

    def unavailable():
        return [], [], f"⚠️ Arama kullanılamıyor: {searcher.message}"

    def check_k(k) -> int | None:
        try:
            k = int(k)
        except (TypeError, ValueError):
            return None
        return k if 1 <= k <= MAX_RESULTS else None

    def run(query_fn, what: str):
        started = time.perf_counter()
        try:
            hits = query_fn()
        except ImageLoadError as err:
            return [], [], f"⚠️ Görsel açılamadı: {err}"
        except ValueError as err:
            return [], [], f"⚠️ {err}"
        except Exception:
            log.exception("search failed for %s", what)
            return [], [], "⚠️ Beklenmeyen bir hata oluştu; ayrıntı sunucu günlüğünde."
        gallery, results = hits_to_outputs(hits)
        elapsed = (time.perf_counter() - started) * 1000
        return gallery, results, f"{len(results)} sonuç · {elapsed:.0f} ms"

    def search(
        query: str, k: int = DEFAULT_RESULTS, deep: bool = False, alpha: float = DEFAULT_ALPHA
    ):
        """Türkçe metinle görsel ara.

        Args:
            query: the Turkish text, e.g. "karda oynayan köpekler"
            k: how many results, 1-30
            deep: Deep Search: score by the images and their captions together
            alpha: with deep=True, 0 = captions only, 1 = images only
        Returns:
            the gallery, the results as JSON and a status line
        """
        if isinstance(searcher, LoadError):
            return unavailable()
        if not isinstance(query, str) or not query.strip():
            return [], [], "✍️ Lütfen bir arama metni yazın (ör. “karlı dağlar”)."
        n = check_k(k)
        if n is None:
            return [], [], f"⚠️ Sonuç sayısı 1 ile {MAX_RESULTS} arasında olmalı (verilen: {k})."
        try:
            weight = float(alpha) if deep else None
        except (TypeError, ValueError):
            weight = -1.0
        if weight is not None and not 0.0 <= weight <= 1.0:
            return [], [], f"⚠️ Denge (alpha) 0 ile 1 arasında olmalı (verilen: {alpha})."
        return run(lambda: text_on_device(query.strip(), n, weight), repr(query))

    def search_image(image: str | None, k: int = DEFAULT_RESULTS):
        """Görselle görsel ara: yüklenen görsele en çok benzeyenler.

        Args:
            image: the query image (a file; gradio_client: handle_file(path_or_url))
            k: how many results, 1-30
        Returns:
            the gallery, the results as JSON and a status line
        """
        if isinstance(searcher, LoadError):
            return unavailable()
        if not image:
            return [], [], "🖼️ Lütfen önce bir görsel yükleyin."
        n = check_k(k)
        if n is None:
            return [], [], f"⚠️ Sonuç sayısı 1 ile {MAX_RESULTS} arasında olmalı (verilen: {k})."
        return run(lambda: image_on_device(image, n), "an uploaded image")

    def embed(text: str) -> list[float]:
        """Metnin sorgu vektörü (MultiEmbedTR), veri kümesinin FAISS dizininde aramak için.

        Args:
            text: the Turkish text, e.g. "karlı dağlar"
        Returns:
            the text's embedding: L2-normalised floats, as many as the index's dimension
        """
        if isinstance(searcher, LoadError):
            raise gr.Error(f"Arama kullanılamıyor: {searcher.message}")
        if not isinstance(text, str) or not text.strip():
            raise gr.Error("Lütfen bir metin verin (ör. “karlı dağlar”).")
        if len(text) > MAX_EMBED_CHARS:
            raise gr.Error(f"Metin en çok {MAX_EMBED_CHARS} karakter olabilir ({len(text)}).")
        try:
            vector = embed_on_device(text.strip())
        except ValueError as err:
            raise gr.Error(str(err)) from None
        return [float(x) for x in vector]

    return search, search_image, embed


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

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            try:  # the bytes as sent, not decoded
                return processing_utils.save_base64_to_cache(payload.url, self.GRADIO_CACHE)
            except ValueError:
                raise gr.Error("Görsel açılamadı: geçersiz base64 verisi.") from None
        return payload.path


def build_app(searcher: Searcher | LoadError) -> gr.Blocks:
    """The Blocks UI around one loaded Searcher (or the reason loading failed), queue set.

    Theme and CSS are launch() arguments in gradio 6: start it with ``launch(demo, ...)``.
    """
    search, search_image, embed = make_handlers(searcher)
    with gr.Blocks(title=f"{TITLE} · Türkçe görsel arama") as demo:
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}", elem_id="title")
        if isinstance(searcher, LoadError):
            gr.Markdown(f"⚠️ **Arama kullanılamıyor.** {searcher.message}", elem_id="load-error")
        else:
            gr.Markdown(
                f"<small>{len(searcher):,} görsel".replace(",", ".")
                + f" · model `{searcher.manifest.model_id}` · veri `{searcher.location}`</small>",
                elem_id="source",
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
                        elem_id="query",
                    )
                    search_button = gr.Button(
                        "Ara", variant="primary", scale=1, min_width=100, elem_id="search-button"
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
                    alpha = gr.Slider(
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
        k = gr.Slider(
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
            label="Sonuçlar",
            columns=4,
            height="auto",
            object_fit="cover",
            format="jpeg",
            buttons=["fullscreen"],
            interactive=False,
            elem_id="results",
        )
        with gr.Accordion("Sonuçlar (JSON)", open=False):
            results = gr.JSON(show_label=False)

        outputs = [gallery, results, status]
        # One event for Enter and the button, so the API has exactly one /search.
        gr.on(
            [query.submit, search_button.click],
            search,
            inputs=[query, k, deep, alpha],
            outputs=outputs,
            api_name="search",
            concurrency_id="queries",  # one limit shared by both kinds of query (see top)
        )
        gr.on(
            [image.upload, image_button.click],
            search_image,
            inputs=[image, k],
            outputs=outputs,
            api_name="search_image",
            concurrency_id="queries",
        )
        gr.api(embed, api_name="embed", concurrency_id="queries")
        # UI-only events: private, so the three endpoints above are the whole public API.
        deep.change(
            lambda on: gr.update(visible=on),
            inputs=deep,
            outputs=alpha,
            api_visibility="private",
            queue=False,
        )
        examples.load_input_event.then(
            search, inputs=[query, k, deep, alpha], outputs=outputs, api_visibility="private"
        )
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE)
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """``demo.launch`` with this app's theme, CSS and upload limit (launch() arguments).

    Gradio serves only what it created or was uploaded (its cache) and the app adds no
    ``allowed_paths``: the dataset, the index files and the source are never reachable through
    its file routes (tests/test_security.py).
    """
    kwargs.setdefault("max_file_size", MAX_UPLOAD)
    return demo.launch(theme=THEME, css=CSS, **kwargs)


def main() -> None:
    import imagesearchtr

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log.info("imagesearchtr %s from %s", imagesearchtr.__version__, imagesearchtr.__file__)
    if spaces is not None:
        log.info("spaces is installed: queries run inside @spaces.GPU (ZeroGPU)")
    # Server address and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (read by
    # gradio); never share=True: a Space is already public, and a tunnel would bypass it.
    launch(build_app(load_searcher()))


if __name__ == "__main__":
    main()
