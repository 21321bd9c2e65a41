"""What the simulated people say: report descriptions per category, notes, names.

``{place}`` in a template is where in the cell (e.g. 通工小区3栋楼下); ``{cell}`` the cell's name.
Categories without templates of their own get ``GENERIC`` with the category's name.
"""

from __future__ import annotations

# How often each category is reported, relative to 1 for a category not listed. The
# everyday ones (garbage, lamps, parking and fire lanes, vendors, disputes, elder care) lead;
# emergencies (gas, road collapse, burst mains) are rare.
WEIGHTS: dict[str, float] = {
    "E0101": 14,  # 暴露垃圾
    "E0504": 9,   # 机动车乱停放
    "C0101": 8,   # 路灯
    "E0201": 6,   # 乱张贴
    "E0402": 5,   # 消防通道堵塞
    "E0502": 5,   # 流动摊贩
    "E0501": 5,   # 占道经营
    "E0701": 5,   # 邻里纠纷
    "E0801": 4,   # 独居老人照护
    "C0301": 4,   # 垃圾箱
    "E0505": 4,   # 噪音扰民
    "C0501": 4,   # 楼道灯
    "E0702": 3,   # 物业纠纷
    "E0302": 3,   # 施工噪音
    "C0102": 3,   # 井盖
    "C0401": 2,   # 行道树
    "E0102": 2,   # 污水横流
    "E0503": 2,   # 僵尸车
    "E0303": 2,   # 屋顶漏水
    "E0401": 0.3,  # 燃气泄漏
    "E0403": 0.2,  # 路面塌陷
    "E0404": 0.3,  # 供水管道爆裂
}

TEMPLATES: dict[str, tuple[str, ...]] = {
    "E0101": (
        "{place}垃圾堆积三天无人清运，气味很大",
        "{place}有人乱倒建筑垃圾和生活垃圾",
        "{place}垃圾满溢到路面，招来很多苍蝇",
        "{place}绿化带里堆了一大堆装修垃圾",
    ),
    "E0504": (
        "{place}机动车乱停乱放，堵住了人行道",
        "{place}有车辆长期占用盲道停放",
        "{place}小车停在路口转角，影响通行视线",
    ),
    "C0101": (
        "{place}路灯不亮已经好几天了，晚上很黑",
        "{place}路灯一闪一闪的，灯罩也破了",
        "{place}两盏路灯白天一直亮着",
    ),
    "E0201": (
        "{place}电线杆和墙上贴满了小广告",
        "{place}单元门上被喷涂了办证电话",
    ),
    "E0402": (
        "{place}消防通道被私家车堵死了",
        "{place}消防通道上堆放了杂物和电动车",
        "{place}有人在消防通道上搭棚子",
    ),
    "E0502": (
        "{place}有流动摊贩占道卖水果，早晚高峰很堵",
        "{place}流动烧烤摊油烟很大，晚上收摊后一地垃圾",
    ),
    "E0501": (
        "{place}门面店把货物摆到人行道上经营",
        "{place}餐馆在人行道上摆桌椅",
    ),
    "E0701": (
        "{place}两户邻居因为楼道堆物发生争吵，需要调解",
        "{place}楼上漏水到楼下，邻居之间协商不成",
        "{place}邻居养狗扰民，双方矛盾激化",
    ),
    "E0801": (
        "{place}独居老人两天没出门，电话也没人接，请上门看看",
        "{place}独居老人行动不便，家里断水，需要帮助",
        "{place}高龄独居老人身体不适，子女不在身边",
    ),
    "C0301": (
        "{place}垃圾箱破损，垃圾散落一地",
        "{place}分类垃圾桶盖子坏了",
    ),
    "E0505": (
        "{place}深夜有人大声喧哗，影响休息",
        "{place}广场舞音响声音太大",
    ),
    "C0501": (
        "{place}楼道灯坏了，老人上下楼不安全",
        "{place}楼道声控灯不亮",
    ),
    "E0702": (
        "{place}物业长期不清扫楼道，业主和物业发生纠纷",
        "{place}电梯坏了一周物业不修，业主意见很大",
    ),
    "E0302": (
        "{place}工地夜间施工，噪音很大",
        "{place}装修电钻声从早响到晚，中午也不停",
    ),
    "C0102": (
        "{place}井盖缺失，有人差点踩空",
        "{place}井盖破损松动，车过时响声很大",
    ),
    "C0401": (
        "{place}行道树枝叶太密挡住了路灯",
        "{place}行道树歪倒，有倒伏危险",
    ),
    "E0102": ("{place}下水道堵塞，污水漫到路面",),
    "E0503": ("{place}一辆车停了半年没动过，落满灰尘，轮胎都瘪了",),
    "E0303": ("{place}屋顶漏水，顶楼住户家里墙面发霉",),
    "E0401": ("{place}闻到很浓的燃气味，疑似燃气泄漏",),
    "E0403": ("{place}路面突然塌陷出一个坑",),
    "E0404": ("{place}供水管道爆裂，水冒到路面上",),
}

GENERIC = (
    "{place}发现{name}问题，请尽快处理",
    "{place}存在{name}方面的问题，群众反映较多",
    "{place}的{name}出现问题，请相关部门处置",
)

DUPLICATE = (
    "又有居民反映：{description}",
    "{description}（居民再次来电反映）",
    "我也看到了，{description}",
)

SPOTS = (
    "{cell}{n}栋楼下", "{cell}东门口", "{cell}南侧人行道", "{cell}停车场", "{cell}{n}单元门口",
    "{cell}中心花园", "{cell}北门外", "{cell}{n}栋旁边的巷子",
)

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董袁潘蒋蔡余杜叶程"
GIVEN = ("伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰",
         "娟", "涛", "明", "超", "秀兰", "霞", "平", "刚", "桂英", "建华", "玉兰", "志强")

ACK_NOTES = ("已收到，安排人员前往", "已报到，马上处理", "已派员", "")
PROGRESS_NOTES = (
    "已到现场，正在处置", "已联系相关责任人，正在协调", "已现场核实情况，今天内处理完毕",
    "材料已调配，正在施工", "已约谈当事人",
)
RESOLVE_NOTES: dict[str, tuple[str, ...]] = {
    "E0101": ("垃圾已全部清运，现场已冲洗", "已清理完毕并告知物业加强巡查"),
    "E0504": ("已联系车主挪车，并张贴违停告知单", "已拖移违停车辆"),
    "C0101": ("已更换灯泡，路灯恢复正常", "线路故障已排除，路灯已亮"),
    "E0402": ("车辆已挪走，消防通道已畅通", "杂物已清理，已告知物业每日巡查"),
    "E0701": ("经人民调解员调解，双方达成一致", "已组织双方协商，签订调解协议"),
    "E0801": ("社区工作人员已上门探视，老人情况良好", "已联系家属并安排志愿者每日探访"),
}
GENERIC_RESOLVE = ("已处置完毕", "问题已解决，现场已恢复", "已按规定处理完毕，请核查")

RETURN_REASONS: tuple[tuple[str, float, str], ...] = (
    ("not_our_responsibility", 5, "经核实不属于本部门职责范围"),
    ("needs_other_department", 3, "需由其他部门牵头处置"),
    ("wrong_location", 1, "地址有误，现场未发现该问题"),
    ("cannot_handle", 1, "本部门无处置能力，请重新派遣"),
)

VERIFY_PASSED = ("现场核查属实，问题已解决", "已到现场核实，处置到位", "核查通过")
VERIFY_FAILED = ("现场核查问题仍然存在，请返工", "处置不彻底，仍有残留", "问题反弹，需要重新处理")

RATING_GOOD = ("处理很及时，谢谢", "满意", "问题解决了，点赞", "")
RATING_BAD = ("问题还没有真正解决", "处理太慢了，不满意", "只是表面处理，过两天又这样了")

FOLLOW_UP_NOTES = ("已电话回访，群众表示满意", "已上门回访，问题未再出现")

WHISTLE_REASONS = (
    "多部门职责交叉，需联合处置", "问题久拖未决，群众反映强烈", "需相关部门到现场会商",
)

# Departments a community or street typically summons with a whistle (吹哨).
SUMMONABLE = ("housing", "urban_mgmt", "police", "justice", "civil_affairs", "sanitation",
              "traffic")
