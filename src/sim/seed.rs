//! Text from the field report (shared/seed): the configuration of its Proxmox
//! host, used by the twin's host files and by the tests, in one place.

/// `qm config 100` of the field report: VM 100 with the iGPU (c5:00.0) and
/// its HD audio function (c5:00.1) passed through.
pub const VM_100_CONF: &str = "\
agent: 1
bios: ovmf
boot: order=scsi0;ide1
cores: 4
cpu: host
efidisk0: tank:vm-100-disk-0,efitype=4m,pre-enrolled-keys=1,size=1M
hookscript: local:snippets/vm100-hooks.sh
hostpci0: 0000:c5:00.0,pcie=1,x-vga=1,romfile=vbios_1002_1900.bin
hostpci1: 0000:c5:00.1,pcie=1,romfile=AMDGopDriver_8845hs.rom
ide0: none,media=cdrom
ide1: none,media=cdrom
machine: pc-q35-9.2+pve1
memory: 32768
meta: creation-qemu=9.2.0,ctime=1751205760
name: win11
net0: virtio=BC:24:11:65:28:1F,bridge=lanbr
numa: 0
onboot: 1
ostype: win11
parent: after_add_devcon_scripts
scsi0: tank:vm-100-disk-2,cache=writeback,discard=on,size=128G,ssd=1
scsihw: virtio-scsi-pci
smbios1: uuid=2685ce19-6d14-4bc8-a08a-70699408edfc
sockets: 1
tpmstate0: tank:vm-100-disk-1,size=4M,version=v2.0
usb0: host=062a:4101
vga: none
vmgenid: 4dee25b3-2e2d-4948-8151-8e8b7758a410
";

/// The field report's `/etc/pve/storage.cfg`.
pub const STORAGE_CFG: &str = "\
dir: local
        path /var/lib/vz
        content images,vztmpl,snippets,iso,backup,rootdir
        prune-backups keep-all=1

zfspool: tank
        pool tank
        content rootdir,images
        mountpoint /tank
        sparse 1
";

/// The field report's `/etc/modprobe.d/passthrough.conf` (abridged to the
/// modules this host would load for these functions) and `/etc/modules`.
pub const PASSTHROUGH_CONF: &str = "\
# don't load driver for iGPU and sound devices
blacklist amdgpu
blacklist radeon
blacklist snd_sof_amd_acp63
blacklist snd_hda_intel
blacklist snd_pci_ps
blacklist snd_rpl_pci_acp6x
blacklist snd_acp_pci

# load vfio-pci driver instead
options vfio-pci ids=1002:1900,1002:1640,1022:15e2,1022:15e3
";

pub const ETC_MODULES: &str = "vfio\nvfio_iommu_type1\nvfio_pci\nvfio_virqfd\n";
