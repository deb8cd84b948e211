"""Links and CPU caps: how an emulated device is made slow and far away.

`shaper` is the userspace link (rate, delay, jitter, loss on the real bytes of a
real socket); `cpu` stretches device compute to a device class's speed. Kernel
shaping (tc in network namespaces), cgroup caps and trace replay build on the
same interfaces.
"""
