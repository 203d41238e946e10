"""The VM lab's tests (docs/vm-lab.md): one qemu VM as a db host. Not part of `make test` (each
boot takes minutes under TCG); run them with `make vm-test`."""


def pytest_configure(config):
    config.addinivalue_line("markers", "vm: needs the VM lab (qemu, the image of scripts/build-vm-image.sh)")
