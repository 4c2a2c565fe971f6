def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: runs the generated kernels on a CUDA GPU")
