# The two commands a newcomer needs (see README.md):
#   make demo   build everything and run a demo sync on the embedded default
#   make test   run the whole test suite (what CI runs)
.PHONY: demo test setup lint

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

test: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
