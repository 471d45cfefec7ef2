mreplfs-journal consumer v1
"peer-a" 4242
crc32c b77a3e70
