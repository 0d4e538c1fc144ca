# A kernel-worker image with one more kernel environment, so that kernels need not run in the
# services' virtualenv (/venv). Build it after the kernel-worker image:
#   docker build -f deploy/kernel-env.Dockerfile -t kernelbus-kernel-worker-envs \
#     --build-arg PACKAGES="ipykernel matplotlib ipywidgets" .
# then run compose with the overlay deploy/compose.kernel-env.yaml (docs/kernel-environments.md).
# Build arguments: WORKER_IMAGE (the image to extend), ENV_NAME (the environment's and the
# kernelspec's name), DISPLAY_NAME, PACKAGES (pip requirements; ipykernel is needed), WHEELS_URL
# (a pip --find-links URL to install from instead of PyPI, for offline builds).
ARG WORKER_IMAGE=kernelbus-kernel-worker
FROM ${WORKER_IMAGE}
ARG ENV_NAME=data-science
ARG DISPLAY_NAME="Python (data science)"
ARG PACKAGES=ipykernel
ARG WHEELS_URL=""
USER root
# The environment's Python is the image's system Python, not /venv's: `venv` from /venv's
# interpreter would still make an independent environment, but the base is explicit here.
RUN /usr/bin/python3 -m venv "/opt/kernel-envs/$ENV_NAME" \
    && "/opt/kernel-envs/$ENV_NAME/bin/pip" install --no-cache-dir --disable-pip-version-check \
       ${WHEELS_URL:+--no-index --find-links "$WHEELS_URL"} $PACKAGES \
    && "/opt/kernel-envs/$ENV_NAME/bin/python" -m ipykernel install \
       --prefix /opt/kernelspecs --name "$ENV_NAME" --display-name "$DISPLAY_NAME"
USER kernelbus
# Where the worker (jupyter_client's KernelSpecManager) looks for kernelspecs, besides /venv's.
ENV JUPYTER_PATH=/opt/kernelspecs/share/jupyter
