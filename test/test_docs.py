"""The user-facing documents: every relative link resolves, and the quick start's commands parse."""

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/library.md", "egs2/clipsep/enh1/README.md", "egs2/clipsep/tts1/README.md"]


def _anchors(path: Path) -> set:
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, spaces to dashes)."""
    heads = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc):
    path = REPO / doc
    links = re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8"))
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, f"{doc}: no relative links"  # each document links its neighbours
    for link in local:
        target, _, anchor = link.partition("#")
        dest = (path.parent / target).resolve() if target else path
        assert dest.exists(), f"{doc}: link {link!r} -> {dest} does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{doc}: no heading #{anchor} in {dest.name}"


def test_the_quick_start_commands_parse():
    """The quick start's separate command and the stock ESPnet line name options their parsers know."""
    from espnet2.enh.clipsep.bin import separate

    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quick start\n\n.*?```bash\n(.*?)```", text, re.S).group(1)
    command = " ".join(line.split("#")[0].rstrip(" \\") for line in block.splitlines())
    calls = [c.strip() for c in command.split("&&")]
    sep = next(c for c in calls if "espnet2.enh.clipsep.bin.separate" in c)
    argv = shlex.split(sep.split("espnet2.enh.clipsep.bin.separate", 1)[1])
    args = separate.get_parser().parse_args(argv)
    assert args.query == ["trumpet"] and args.model.endswith("packed.zip")
    assert "cd egs2/clipsep/enh1" in command and "./run.sh" in command and (REPO / "egs2/clipsep/enh1/run.sh").is_file()
