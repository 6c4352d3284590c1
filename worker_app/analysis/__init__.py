"""Audio analysis: one module per job (decode, loudness, rhythm, tonality, spectral, vector); ``track.analyse``
puts them together for one file. Plain numpy and scipy on top of Debian's ffmpeg: no per-process warm-up."""

# Stored with every track's features. Bump it when any figure would come out different: every track is then
# analysed again by the next scan that sees it (or `extract_audio_features_batch` on its id).
ANALYSIS_VERSION = 1
