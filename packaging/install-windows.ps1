<#
.SYNOPSIS
    Register (or with -Uninstall remove) the hermes-relay agent as a per-user logon entry.

.DESCRIPTION
    Written by `hermes-relay agent install` next to hermes-relay-agent.cmd. It sets the value
    "HermesRelayAgent" under HKCU\Software\Microsoft\Windows\CurrentVersion\Run to that .cmd, which
    Windows runs at every logon of this user; no administrator rights are needed.
    `hermes-relay agent install` / `uninstall` do the same through winreg; this script is for doing
    it by hand:  powershell -ExecutionPolicy Bypass -File install-windows.ps1 [-Uninstall]
    UNTESTED: written without a Windows machine to run it on (see packaging/README.md).
#>
param([switch]$Uninstall)

$ErrorActionPreference = 'Stop'
$RunKey = 'HKCU:\Software\Microsoft\Windows\CurrentVersion\Run'
$Name = 'HermesRelayAgent'
$Cmd = '@CMD_PATH@'
$Python = '@PYTHON@'

if ($Uninstall) {
    Remove-ItemProperty -LiteralPath $RunKey -Name $Name -ErrorAction SilentlyContinue
    & $Python -m hermes_relay.cli agent stop
    Write-Host "hermes-relay agent: logon entry removed"
    exit 0
}

if (-not (Test-Path -LiteralPath $Cmd)) {
    throw "missing $Cmd; run ``hermes-relay agent install`` to write it"
}
if (-not (Test-Path -LiteralPath $RunKey)) {
    New-Item -Path $RunKey -Force | Out-Null
}
Set-ItemProperty -LiteralPath $RunKey -Name $Name -Value ('"' + $Cmd + '"')
Write-Host "hermes-relay agent: starts at logon via $RunKey\$Name"
Write-Host "start it now with: hermes-relay agent start"
