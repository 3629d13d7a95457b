#!/usr/bin/env bash
# Build the Elastic Beanstalk source bundle of one tier: scripts/build_bundle.sh web|worker [dir]
#
# The bundle is the repository's files (tracked, plus new ones git does not ignore, as they are
# in the working tree) with the tier's .ebextensions/<tier>/*.config lifted to the top of
# .ebextensions (EB reads only that level), both tier folders removed, cron.yaml kept for the
# worker only, and the tier written to .platform/bundle_tier (the prebuild hook refuses a
# bundle built for another tier). The zip goes to [dir] (default: dist/ at the repository root)
# as hiring-pro-<tier>-<revision>.zip; its path is the last line of the output.
set -euo pipefail

tier="${1:-}"
case "${tier}" in
  web | worker) ;;
  *)
    echo "usage: scripts/build_bundle.sh web|worker [output directory]" >&2
    exit 2
    ;;
esac
other="web"
[ "${tier}" = "web" ] && other="worker"

repo="$(cd "$(dirname "$0")/.." && pwd)"
out_dir="${2:-${repo}/dist}"
mkdir -p "${out_dir}"
out_dir="$(cd "${out_dir}" && pwd)"
if [ "${out_dir}" = "${repo}" ]; then
  echo "the output directory must not be the repository root" >&2
  exit 2
fi
command -v zip > /dev/null || { echo "build_bundle.sh needs zip" >&2; exit 1; }

# The revision in the name: the commit, marked -dirty when the working tree differs from it.
revision="$(git -C "${repo}" describe --always --dirty --abbrev=12)"
bundle="${out_dir}/hiring-pro-${tier}-${revision}.zip"

staging="$(mktemp -d)"
trap 'rm -rf "${staging}"' EXIT

# Files git tracks or would track (deleted ones excepted); an output directory inside the
# repository (earlier bundles) stays out.
out_prefix="${out_dir#"${repo}"/}/"
(
  cd "${repo}"
  git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' path; do
      [ "${path#"${out_prefix}"}" = "${path}" ] && [ -f "${path}" ] && printf '%s\0' "${path}"
    done \
    | tar --null -T - -cf -
) | tar -xf - -C "${staging}"

shopt -s nullglob
tier_configs=("${staging}/.ebextensions/${tier}/"*.config)
[ "${#tier_configs[@]}" -gt 0 ] || { echo "no .ebextensions/${tier}/*.config" >&2; exit 1; }
for config in "${tier_configs[@]}"; do
  name="$(basename "${config}")"
  if [ -e "${staging}/.ebextensions/${name}" ]; then
    echo ".ebextensions/${tier}/${name} has the name of a shared configuration file" >&2
    exit 1
  fi
  mv "${config}" "${staging}/.ebextensions/${name}"
done
rm -rf "${staging}/.ebextensions/${tier}" "${staging}/.ebextensions/${other}"
[ "${tier}" = "worker" ] || rm -f "${staging}/cron.yaml"
echo "${tier}" > "${staging}/.platform/bundle_tier"

rm -f "${bundle}"
# zip keeps the files' Unix modes (the hooks' executable bits).
(cd "${staging}" && zip -q -r -X "${bundle}" .)
echo "${bundle}"
