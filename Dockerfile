# The specdeploy operator image; it also runs the vLLM-compatible simulator (`specdeploy sim-server`).
# Build: docker build -t ghcr.io/specdeploy/specdeploy:0.1.0 .
# BASE is any image with python3 (>= 3.11) and its venv module: python:3.11-slim for a user's build; hack/images.sh
# builds offline from a Debian bookworm root filesystem made with mmdebstrap.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
RUN python3 -m venv /opt/specdeploy
COPY pyproject.toml README.md ./
# Dependencies first, from pyproject alone (an empty package), so a source change reuses this layer.
RUN mkdir -p operator/specdeploy && touch operator/specdeploy/__init__.py \
    && /opt/specdeploy/bin/pip install --no-cache-dir . && /opt/specdeploy/bin/pip uninstall -y specdeploy \
    && rm -rf operator build
COPY operator ./operator
RUN /opt/specdeploy/bin/pip install --no-cache-dir --no-deps . && rm -rf build

FROM ${BASE}
# No build context in the final stage: only the virtual environment.
COPY --from=build /opt/specdeploy /opt/specdeploy
# Non-root; any UID works (OpenShift's restricted-v2 assigns one), group 0 as OpenShift expects. Such a UID has no
# passwd entry: HOME must be writable and USER set, or getpass.getuser() (kopf asks it) raises KeyError.
ENV PATH=/opt/specdeploy/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp USER=specdeploy
USER 10001:0
EXPOSE 8080
ENTRYPOINT ["specdeploy"]
CMD ["run"]
