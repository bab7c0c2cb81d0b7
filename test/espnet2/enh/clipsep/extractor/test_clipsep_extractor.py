"""CLIPSep as a TSE extractor: the query embedding in input_aux gives what the separator gives for that query."""

import pytest
import torch

from espnet2.enh.clipsep.extractor.clipsep_extractor import CLIPSepExtractor
from espnet2.enh.clipsep.separator.clipsep_separator import CLIPSepSeparator

CONF = dict(query_dim=8, num_masks=4, unet_channels=4, unet_layers=2, warp_bins=16)


@pytest.fixture
def extractor():
    torch.manual_seed(0)
    ext = CLIPSepExtractor(33, **CONF)
    for p in ext.parameters():  # away from the near-zero init, so that queries and frequencies matter
        torch.nn.init.normal_(p, 0.0, 0.3)
    return ext.eval()


def test_extract_equals_the_separator_for_that_query(extractor):
    spec = torch.randn(2, 12, 33, dtype=torch.complex64)
    query = torch.randn(2, 8)
    masked, ilens, others = extractor(spec, torch.tensor([12, 12]), query[:, None], torch.tensor([1, 1]), "_spk2")
    sep = CLIPSepSeparator(33, num_spk=1, **CONF).eval()
    sep.load_state_dict(extractor.separator.state_dict())
    expected, _, sep_others = sep(spec, torch.tensor([12, 12]), {"query1": query})
    torch.testing.assert_close(masked, expected[0])
    assert list(others) == ["mask_spk2"] and torch.equal(others["mask_spk2"], sep_others["mask_spk1"])
    # (B, D) is the same query as (B, 1, D), the TSE preprocessor's shape for an npy embedding
    torch.testing.assert_close(extractor(spec, ilens, query, ilens)[0], masked)
    # another query, another output
    assert not torch.allclose(extractor(spec, ilens, -query, ilens)[0], masked)


def test_remove_gives_the_complement(extractor):
    spec = torch.randn(1, 8, 33, dtype=torch.complex64)
    query = torch.randn(1, 8)
    kept = extractor(spec, torch.tensor([8]), query, torch.tensor([1]))[0]
    extractor.separator.remove = True
    removed = extractor(spec, torch.tensor([8]), query, torch.tensor([1]))[0]
    torch.testing.assert_close(kept + removed, spec)
