#!/bin/sh
# Entry point of the kernelbus-nats image: nats-server, with each user's password passed on as
# a quoted string.
#
# nats.conf names the passwords by variable (`password: $KERNELBUS_NATS_API_PASSWORD`), and
# nats-server parses such a variable's value as configuration text: unquoted, a password such
# as `12-x...` is read as a date, `on` as a boolean, `a b` does not parse, and `$HOME` names
# another variable. So every KERNELBUS_NATS_*_PASSWORD is handed on as "..." with `\` and `"`
# escaped, which nats-server reads literally. A password with a control character (a newline
# included) is refused with a message, before nats-server starts.
set -eu
for name in $(env | sed -n 's/^\(KERNELBUS_NATS_[A-Z0-9_]*_PASSWORD\)=.*/\1/p'); do
  eval "value=\${$name}"
  case "$value" in
    *[[:cntrl:]]*)
      echo "kernelbus-nats: $name contains a control character; choose another password" >&2
      exit 64
      ;;
  esac
  escaped=$(printf '%s' "$value" | sed 's/\\/\\\\/g; s/"/\\"/g')
  export "$name=\"$escaped\""
done
exec nats-server "$@"
