"""Training data: the procedural scene generator and loaders for the real dataset layouts."""

import cv2

# OpenCV's thread pool does not survive fork(): a DataLoader or generator worker forked after the
# parent ran a parallel OpenCV call (the clip renderer's warps, say) waits forever on the pool's
# lock. Workers give the parallelism here, so OpenCV runs sequentially in every training process.
cv2.setNumThreads(0)
