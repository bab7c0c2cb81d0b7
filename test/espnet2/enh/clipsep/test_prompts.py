"""template_prompts: every query in every template, in query-major order; bad queries refused."""

import pytest

from espnet2.enh.clipsep.prompts import template_prompts


def test_query_major_order_and_stripping():
    assert template_prompts([" dog ", "violin"], ["a {}", "the {} sound"]) == [
        "a dog", "the dog sound", "a violin", "the violin sound"]  # fmt: skip
    assert template_prompts([], ["{}"]) == []


@pytest.mark.parametrize("queries, error, match", [("dog", TypeError, "not one string"),
                                                   (["dog", "  "], ValueError, "position 1")])  # fmt: skip
def test_bad_queries(queries, error, match):
    with pytest.raises(error, match=match):
        template_prompts(queries, ["{}"])
