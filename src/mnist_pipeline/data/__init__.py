"""The data: download from verified mirrors, the IDX codec, preprocessing, and the .npy hand-over between stages."""
