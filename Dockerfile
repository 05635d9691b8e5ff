FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY notifier ./notifier
COPY lua ./lua
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[speed]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 notifier
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER notifier
ENV NOTIFIER_API_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["notifier"]
CMD ["run"]
