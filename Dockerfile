# Groundwork server and worker image (CPU). Build: docker build -t groundwork .
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libgdal-dev clang pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin groundwork

FROM debian:bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libgdal32 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/groundwork /usr/local/bin/groundwork
ENV GROUNDWORK_BIND=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["groundwork"]
CMD ["serve"]
