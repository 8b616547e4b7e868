"""`python -m bench` (``make bench``): how fast each stage runs alone and together, against targets.

One module per stage: :mod:`bench.stage_one` (decode, decode + BlazeFace, the backbone alone),
:mod:`bench.end_to_end` (``extract.pipeline.run_extract`` on real media, peak memory per process,
a 10x longer video), :mod:`bench.naive` (the baseline written the way research code usually is),
:mod:`bench.cache_io` (HDF5 write and random-window read), :mod:`bench.stage_two` (training from a
real cache against in-memory arrays, through :mod:`train.bench`). :mod:`bench.report` prints the
table and the PASS/MISS lines; :mod:`bench.common` holds the settings, the machine description,
the media builders and the memory probes.
"""
