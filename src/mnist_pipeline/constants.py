"""MNIST's fixed facts, in one place: the IDX codec, preprocessing, the models and scoring all use them."""

IMAGE_SIDE = 28
NUM_CLASSES = 10
DIGITS = tuple(range(NUM_CLASSES))
MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000
