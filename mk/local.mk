# The local stack's extras, included by the Makefile: headless Chromium for tests/test_dashboard.py.
# Debian's `chromium` package is installed once, only when /usr/bin/chromium is missing (needs root).
.PHONY: chromium

chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing Debian's chromium (tests/test_dashboard.py renders the dashboard with it)"; \
		apt-get update && apt-get install -y chromium; \
	fi

test: chromium
