# Where the corpora live on this machine (edit, or export before ./run.sh).
# MUSIC: <dir>/<instrument>/<youtube_id>.mp4 (the 11 solo instruments), e.g. from the MUSIC-21 download script.
MUSIC=${MUSIC:-}
# Optional: CLIPSep's MUSIC split files (github.com/sony/CLIPSep clipsep/data/MUSIC/solo/{train,val,test}.csv);
# without them the split is 80/20 per instrument with seed 1234.
MUSIC_SPLITS=${MUSIC_SPLITS:-}
# VGGSound: <dir>/**/<youtube_id>_<start>*.mp4
VGGSOUND=${VGGSOUND:-}
# CLIPSep's VGGSound split CSVs (github.com/sony/CLIPSep clipsep/data/vggsound/: val.csv, test.csv, test-good.csv, ...)
VGGSOUND_SPLITS=${VGGSOUND_SPLITS:-}
# Optional: the official vggsound.csv (labels of the training clips; used for reporting only)
VGGSOUND_LABELS=${VGGSOUND_LABELS:-}
# Pretrained CLIP ViT-B/32 weights: an open_clip tag ("openai", needs the Hugging Face hub or its cache) or a
# local file (e.g. open_clip_pytorch_model.bin of laion/CLIP-ViT-B-32... or OpenAI's ViT-B-32.pt).
CLIP_PRETRAINED=${CLIP_PRETRAINED:-openai}
