@echo off
rem hermes-relay agent login entry, written by `hermes-relay agent install`.
rem Started at logon through the HKCU\Software\Microsoft\Windows\CurrentVersion\Run value
rem "HermesRelayAgent" (install-windows.ps1 registers it). pythonw.exe opens no console window,
rem and the agent logs to its own file in the log directory.
@ENVIRONMENT@
start "hermes-relay agent" "@PYTHONW@" -m hermes_relay.agent run --detached
