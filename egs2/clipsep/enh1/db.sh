# Where the corpora live on this machine (edit, or export before ./run.sh).
# MUSIC: <dir>/<instrument>/<youtube_id>.mp4 (the 11 solo instruments), e.g. from the MUSIC-21 download script.
MUSIC=${MUSIC:-}
# Optional: CLIPSep's MUSIC split files (github.com/sony/CLIPSep clipsep/data/MUSIC/solo/{train,val,test}.csv),
# needed for the paper's MUSIC test mixtures (pairs follow test.csv's row order); without them the split is 80/20
# per instrument with seed 1234.
MUSIC_SPLITS=${MUSIC_SPLITS:-}
# VGGSound: <dir>/**/<youtube_id>_<start>*.mp4. The music recipe reads it too: MUSIC+ mixes the MUSIC test clips
# with interferers from VGGSound's test-good-no-music.csv (prepared as data/music/vggsound_test_good_no_music).
VGGSOUND=${VGGSOUND:-}
# CLIPSep's VGGSound split CSVs (github.com/sony/CLIPSep clipsep/data/vggsound/: val.csv, test.csv, test-good.csv,
# test-no-music.csv, test-good-no-music.csv); their row order decides the fixed test mixtures (item i of a CSV
# draws its interferer with random.seed(i)), so use the files unedited.
VGGSOUND_SPLITS=${VGGSOUND_SPLITS:-}
# Optional: the official vggsound.csv (labels of the training clips; used for reporting only)
VGGSOUND_LABELS=${VGGSOUND_LABELS:-}
# Pretrained CLIP ViT-B/32 weights: an open_clip tag ("openai", needs the Hugging Face hub or its cache) or a
# local file (e.g. open_clip_pytorch_model.bin of laion/CLIP-ViT-B-32... or OpenAI's ViT-B-32.pt).
CLIP_PRETRAINED=${CLIP_PRETRAINED:-openai}
# Optional: a local bert-base-uncased directory (Hugging Face layout) for BERTSep (./run.sh --systems all); empty:
# its row reads "not run (no BERT weights)". E.g. `hf download google-bert/bert-base-uncased config.json vocab.txt
# tokenizer.json tokenizer_config.json model.safetensors --local-dir DIR` (~440 MB).
BERT_DIR=${BERT_DIR:-}
