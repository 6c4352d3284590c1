"""Audio analysis: one module per job (decode, loudness, rhythm, tonality, spectral, moods, vector); ``track.analyse``
puts them together for one file. Plain numpy and scipy on top of Debian's ffmpeg: no per-process warm-up."""

# Stored with every track's features. Bump it when any figure would come out different: every track is then in
# the backlog, analysed again when a scan finds its file changed or `soniquebay analysis --queue-backlog` queues it.
# 2: true peak and moods; MP3 decoded by libsndfile; timbre statistics on every other frame.
ANALYSIS_VERSION = 2
