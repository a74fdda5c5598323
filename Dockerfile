# raydistill on Ray's official image, at the versions pyproject.toml pins. Cluster nodes run it
# (cluster/kuberay/*.yaml name it; the launcher configs can too):
#   docker build -t registry.example.com/raydistill:0.1.0-ray2.60.0-py311-gpu .
# The -gpu variant carries CUDA; for CPU-only nodes build with
#   --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

WORKDIR /home/ray/raydistill
# torch first, so nothing else pulls a different build (as scripts/setup.sh does)
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users raydistill ./raydistill
COPY --chown=ray:users jobs ./jobs
RUN pip install --no-cache-dir . \
 && python -c "import ray, raydistill, torch, torchvision; assert ray.__version__ == '2.60.0', ray.__version__"
