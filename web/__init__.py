"""The dashboard: static HTML, CSS and ES modules, served by monitor_server (a package only so that it installs inside monitor_server as monitor_server.web)."""
