//! The seed's host, function by function: the UM880 Pro (Ryzen 7 8845HS).

use super::{b, f, io, mem32, mem64, FnSpec, Kind, AMD, ATI, EP, EP_LEG, EP_NSR, RP};

/// The UM880 Pro (Ryzen 7 8845HS) of the seed, function by function.
pub fn um880pro() -> Vec<FnSpec> {
    let gp17 = b(0, 8, 1);
    let gp18 = b(0, 8, 2);
    let gp19 = b(0, 8, 3);
    vec![
        // Root complex and IOMMU: in no IOMMU group (seed's group listing).
        f(
            b(0, 0, 0),
            (AMD, 0x14e8),
            0x060000,
            0,
            None,
            None,
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0, 2),
            (AMD, 0x14e9),
            0x080600,
            0,
            None,
            None,
            Kind::Plain,
            "",
        ),
        f(
            b(0, 1, 0),
            (AMD, 0x14ea),
            0x060000,
            0,
            None,
            Some(0),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 1, 2),
            (AMD, 0x14ed),
            0x060400,
            0,
            Some("pcieport"),
            Some(1),
            RP(0x01, 0x01),
            "pm",
        ),
        f(
            b(0, 2, 0),
            (AMD, 0x14ea),
            0x060000,
            0,
            None,
            Some(2),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 2, 1),
            (AMD, 0x14ee),
            0x060400,
            0,
            Some("pcieport"),
            Some(3),
            RP(0x02, 0x02),
            "pm",
        ),
        f(
            b(0, 2, 2),
            (AMD, 0x14ee),
            0x060400,
            0,
            Some("pcieport"),
            Some(4),
            RP(0x03, 0x03),
            "pm",
        ),
        f(
            b(0, 2, 3),
            (AMD, 0x14ee),
            0x060400,
            0,
            Some("pcieport"),
            Some(5),
            RP(0x04, 0x04),
            "pm",
        ),
        f(
            b(0, 3, 0),
            (AMD, 0x14ea),
            0x060000,
            0,
            None,
            Some(6),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 3, 1),
            (AMD, 0x14ef),
            0x060400,
            0,
            Some("pcieport"),
            Some(6),
            Kind::RootPort {
                secondary: 0x05,
                subordinate: 0x64,
                hotplug: true,
            },
            "pm",
        ),
        f(
            b(0, 4, 0),
            (AMD, 0x14ea),
            0x060000,
            0,
            None,
            Some(7),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 4, 1),
            (AMD, 0x14ef),
            0x060400,
            0,
            Some("pcieport"),
            Some(7),
            Kind::RootPort {
                secondary: 0x65,
                subordinate: 0xc4,
                hotplug: true,
            },
            "pm",
        ),
        f(
            b(0, 8, 0),
            (AMD, 0x14ea),
            0x060000,
            0,
            None,
            Some(8),
            Kind::Plain,
            "",
        ),
        f(
            gp17,
            (AMD, 0x14eb),
            0x060400,
            0,
            Some("pcieport"),
            Some(9),
            RP(0xc5, 0xc5),
            "pm",
        )
        .acpi("\\_SB_.PCI0.GP17"),
        f(
            gp18,
            (AMD, 0x14eb),
            0x060400,
            0,
            Some("pcieport"),
            Some(10),
            RP(0xc6, 0xc6),
            "pm",
        )
        .acpi("\\_SB_.PCI0.GP18"),
        f(
            gp19,
            (AMD, 0x14eb),
            0x060400,
            0,
            Some("pcieport"),
            Some(11),
            RP(0xc7, 0xc7),
            "pm",
        )
        .acpi("\\_SB_.PCI0.GP19"),
        f(
            b(0, 0x14, 0),
            (AMD, 0x790b),
            0x0c0500,
            0x71,
            Some("piix4_smbus"),
            Some(12),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x14, 3),
            (AMD, 0x790e),
            0x060100,
            0x51,
            None,
            Some(12),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 0),
            (AMD, 0x14f0),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 1),
            (AMD, 0x14f1),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 2),
            (AMD, 0x14f2),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 3),
            (AMD, 0x14f3),
            0x060000,
            0,
            Some("k10temp"),
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 4),
            (AMD, 0x14f4),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 5),
            (AMD, 0x14f5),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 6),
            (AMD, 0x14f6),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        f(
            b(0, 0x18, 7),
            (AMD, 0x14f7),
            0x060000,
            0,
            None,
            Some(13),
            Kind::Plain,
            "",
        ),
        // Endpoints behind the GPP bridges (reset_method values: plausible).
        f(
            b(1, 0, 0),
            (0xc0a9, 0x5426),
            0x010802,
            0x01,
            Some("nvme"),
            Some(14),
            Kind::Endpoint {
                legacy: false,
                flr: true,
                no_soft_reset: true,
            },
            "flr bus",
        )
        .under(b(0, 1, 2))
        .bars(vec![mem64(0, 0xdcf0_0000, 0x4000, false)]),
        f(
            b(2, 0, 0),
            (0x10ec, 0x8125),
            0x020000,
            0x05,
            Some("r8169"),
            Some(15),
            EP,
            "pm bus",
        )
        .under(b(0, 2, 1))
        .bars(vec![
            io(0, 0xf000, 0x100),
            mem64(2, 0xdce0_0000, 0x10000, false),
            mem64(4, 0xdce1_0000, 0x4000, false),
        ]),
        f(
            b(3, 0, 0),
            (0x10ec, 0x8125),
            0x020000,
            0x05,
            Some("r8169"),
            Some(16),
            EP,
            "pm bus",
        )
        .under(b(0, 2, 2))
        .bars(vec![
            io(0, 0xe000, 0x100),
            mem64(2, 0xdcd0_0000, 0x10000, false),
            mem64(4, 0xdcd1_0000, 0x4000, false),
        ]),
        f(
            b(4, 0, 0),
            (0x14c3, 0x0616),
            0x028000,
            0,
            Some("mt7921e"),
            Some(17),
            EP,
            "pm bus",
        )
        .under(b(0, 2, 3))
        .bars(vec![
            mem64(0, 0x007c_1000_0000, 0x10_0000, true),
            mem64(2, 0xdcc0_0000, 0x8000, false),
        ]),
        // Bus c5: the iGPU's multi-function device (drivers from the seed's lspci -k).
        f(
            b(0xc5, 0, 0),
            (ATI, 0x1900),
            0x030000,
            0xc5,
            Some("vfio-pci"),
            Some(18),
            Kind::Igpu,
            "",
        )
        .under(gp17)
        .acpi("\\_SB_.PCI0.GP17.VGA_")
        .command(0x0002)
        .bars(vec![
            mem64(0, 0x7c_0000_0000, 256 << 20, true),
            mem64(2, 0xdc00_0000, 2 << 20, true),
            io(4, 0xd000, 0x100),
            mem32(5, 0xdc50_0000, 512 << 10),
        ]),
        f(
            b(0xc5, 0, 1),
            (ATI, 0x1640),
            0x040300,
            0,
            Some("vfio-pci"),
            Some(19),
            EP_LEG,
            "pm",
        )
        .under(gp17)
        .acpi("\\_SB_.PCI0.GP17.HDAU")
        .bars(vec![mem32(0, 0xdc5c_8000, 0x4000)]),
        f(
            b(0xc5, 0, 2),
            (AMD, 0x15c7),
            0x108000,
            0,
            Some("ccp"),
            Some(20),
            EP_NSR,
            "",
        )
        .under(gp17)
        .bars(vec![
            mem32(2, 0xdc40_0000, 1 << 20),
            mem32(5, 0xdc5c_c000, 0x2000),
        ]),
        f(
            b(0xc5, 0, 3),
            (AMD, 0x15b9),
            0x0c0330,
            0,
            Some("xhci_hcd"),
            Some(21),
            EP_LEG,
            "pm",
        )
        .under(gp17)
        .acpi("\\_SB_.PCI0.GP17.XHC0")
        .bars(vec![mem64(0, 0xdc20_0000, 1 << 20, false)]),
        f(
            b(0xc5, 0, 4),
            (AMD, 0x15ba),
            0x0c0330,
            0,
            Some("xhci_hcd"),
            Some(22),
            EP_LEG,
            "pm",
        )
        .under(gp17)
        .acpi("\\_SB_.PCI0.GP17.XHC1")
        .bars(vec![mem64(0, 0xdc30_0000, 1 << 20, false)]),
        f(
            b(0xc5, 0, 5),
            (AMD, 0x15e2),
            0x048000,
            0x63,
            Some("vfio-pci"),
            Some(23),
            EP_NSR,
            "",
        )
        .under(gp17)
        .bars(vec![mem32(0, 0xdc58_0000, 512 << 10)]),
        f(
            b(0xc5, 0, 6),
            (AMD, 0x15e3),
            0x040300,
            0,
            Some("vfio-pci"),
            Some(24),
            EP_NSR,
            "",
        )
        .under(gp17)
        .acpi("\\_SB_.PCI0.GP17.AZAL")
        .bars(vec![mem32(0, 0xdc5c_0000, 0x8000)]),
        // Buses c6 and c7.
        f(
            b(0xc6, 0, 0),
            (AMD, 0x14ec),
            0x130000,
            0,
            None,
            Some(25),
            EP_LEG,
            "bus",
        )
        .under(gp18),
        f(
            b(0xc6, 0, 1),
            (AMD, 0x1502),
            0x118000,
            0,
            None,
            Some(26),
            EP_LEG,
            "pm",
        )
        .under(gp18)
        .bars(vec![
            mem32(0, 0xdca0_0000, 1 << 20),
            mem32(1, 0xdcb0_0000, 0x2000),
        ]),
        f(
            b(0xc7, 0, 0),
            (AMD, 0x14ec),
            0x130000,
            0,
            None,
            Some(27),
            EP_LEG,
            "bus",
        )
        .under(gp19),
        f(
            b(0xc7, 0, 3),
            (AMD, 0x15c0),
            0x0c0330,
            0,
            Some("xhci_hcd"),
            Some(28),
            EP_LEG,
            "pm",
        )
        .under(gp19)
        .bars(vec![mem64(0, 0xdc60_0000, 1 << 20, false)]),
        f(
            b(0xc7, 0, 4),
            (AMD, 0x15c1),
            0x0c0330,
            0,
            Some("xhci_hcd"),
            Some(29),
            EP_LEG,
            "pm",
        )
        .under(gp19)
        .bars(vec![mem64(0, 0xdc70_0000, 1 << 20, false)]),
        f(
            b(0xc7, 0, 5),
            (AMD, 0x1668),
            0x0c0340,
            0,
            Some("thunderbolt"),
            Some(30),
            EP_LEG,
            "pm",
        )
        .under(gp19)
        .bars(vec![mem64(0, 0xdc80_0000, 512 << 10, false)]),
        f(
            b(0xc7, 0, 6),
            (AMD, 0x1669),
            0x0c0340,
            0,
            Some("thunderbolt"),
            Some(31),
            EP_LEG,
            "pm",
        )
        .under(gp19)
        .bars(vec![mem64(0, 0xdc90_0000, 512 << 10, false)]),
    ]
}
