"""local/label_ids.py: label ids for LabelSep, one sorted list shared by every set."""

import numpy as np
from label_ids import main as label_ids_main

from espnet2.enh.clipsep.files.kaldi_table import read_table


def test_label_ids(tmp_path, capsys):
    (tmp_path / "train").write_text("a violin\nb cat\nc violin\n")
    (tmp_path / "test").write_text("x cat\n")
    (tmp_path / "bad").write_text("y dog\n")
    lst = tmp_path / "labels.txt"
    assert label_ids_main(["--label_list", str(lst), "--utt2label", str(tmp_path / "train"), "--output_dir",
                           str(tmp_path / "tr"), "--utt2label", str(tmp_path / "test"), "--output_dir", str(tmp_path / "te")]) == 0
    assert lst.read_text() == "cat\nviolin\n"
    scp = read_table(tmp_path / "tr" / "label.scp")
    assert [int(np.load(scp[k])[0]) for k in "abc"] == [1, 0, 1]
    assert np.load(read_table(tmp_path / "te" / "label.scp")["x"]).dtype == np.int64
    assert label_ids_main(["--label_list", str(lst), "--utt2label", str(tmp_path / "bad"), "--output_dir", str(tmp_path / "b")]) == 2
    assert "label 'dog' is not in" in capsys.readouterr().err
