"""The process a decode/detect worker runs in: set before its first import of numpy or mediapipe.

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
os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's per-graph info lines, once per worker
# mediapipe imports TensorFlow only for optional API docs and works without it; blocking it keeps a
# worker at ~170 MiB instead of ~840 MiB, starts it in 1 s instead of 10, and lets openSMILE run.
sys.modules.setdefault("tensorflow", None)
