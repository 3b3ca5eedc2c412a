#!/bin/sh
# Rebuilds the two seed images of the ext4_image fuzz target and the ext4-reader proptest
# suite (e2fsprogs 1.47.0 made the committed ones). Fixed UUID, hash seed and time, so the
# result depends only on the mke2fs version. Changing the images changes what existing
# corpus entries and artifacts mean (patch offsets are relative to the metadata blocks).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
st=$tmp/st
mkdir -p "$st/d1/d2"
printf 'hello world\n' > "$st/small"
# 20 blocks: direct and single-indirect pointers in the indirect image.
awk 'BEGIN { for (i = 0; i < 20000; i++) printf "%c", 65 + (i * 7) % 26 }' > "$st/d1/f1"
awk 'BEGIN { for (i = 0; i < 3000; i++) printf "x" }' > "$st/d1/d2/f2"
ln -s small "$st/link"
ln -s "$(printf 'a%.0s' $(seq 1 80))" "$st/longlink"
truncate -s 30000 "$st/sparse" && printf 'tail' >> "$st/sparse"
# One block at lblk 300 (double indirect) and one at 65804 (triple indirect).
printf 'double' | dd of="$st/dind" bs=1024 seek=300 conv=notrunc status=none
printf 'triple' | dd of="$st/tind" bs=1024 seek=65804 conv=notrunc status=none
for i in $(seq 1 40); do : > "$st/d1/entry-with-long-name-$i"; done
find "$st" -exec touch -h -d @1700000000 {} +
common="-q -F -b 1024 -N 64 -U 4e5ace00-0000-4000-8000-000000000001 -E hash_seed=4e5ace00-0000-4000-8000-000000000002,root_owner=0:0 -d $st"
export E2FSPROGS_FAKE_TIME=1700000000
# 512 KiB, two groups of 256 blocks: extents, 64bit, flex_bg, metadata_csum (mke2fs defaults).
rm -f "$here/ext4-extents.img"
mkfs.ext4 $common -g 256 -O ^has_journal,^resize_inode "$here/ext4-extents.img" 512K
# 128 KiB, indirect block maps.
rm -f "$here/ext4-indirect.img"
mkfs.ext4 $common -O ^has_journal,^extent,^64bit,^flex_bg,^huge_file,^metadata_csum,^resize_inode \
    "$here/ext4-indirect.img" 128K
e2fsck -fn "$here/ext4-extents.img"
e2fsck -fn "$here/ext4-indirect.img"
