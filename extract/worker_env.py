"""The process a decode/detect worker runs in: set before its first import of numpy or OpenCV.

Imported first by the server the workers fork from (``extract.pool.worker_context``), and by
``extract.worker.worker_main`` where workers are spawned instead.
"""

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the workers are one per core: no thread pools inside
# OpenCV's own pool (pthreads, not OpenMP) splits each small flow, resize or warp over every core and
# spins while it waits: 0.7 core-ms a frame (27% of a worker) for no gain in wall time. Read lazily,
# at OpenCV's first parallel call, so it holds even where cv2 was imported before this module.
os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")
# A worker never needs TensorFlow (BlazeFace runs on LiteRT): blocking it keeps a package that imports
# it for optional extras from costing seconds and ~670 MiB a worker, and lets openSMILE run (it
# corrupts the heap of a process that has loaded TensorFlow).
sys.modules.setdefault("tensorflow", None)
