#!/usr/bin/env python3
"""Generate the PDF, DOCX, XLSX, PPTX and image documents of the sample corpus (corpus/).

The source text of every generated document lives in this file, so the
binary files in corpus/ can always be rebuilt:

    python scripts/make_corpus_docs.py                # auto-detect a CJK font
    python scripts/make_corpus_docs.py --font /usr/share/fonts/truetype/wqy/wqy-microhei.ttc

PDFs are written with fpdf2 and need a CJK TrueType font embedded. The
recommended font is WenQuanYi Micro Hei (Debian/Ubuntu package
``fonts-wqy-microhei``): text extracted from the PDFs with pypdf then reads
back exactly. CFF-based OpenType fonts such as Noto Sans CJK also render, but
pypdf then extracts Chinese text with a space between every character.

DOCX files are written with python-docx, using real "Heading 1"/"Heading 2"
styles and one table each. The Excel workbook (openpyxl) has an FAQ sheet with a
similar-questions column and a table sheet with merged cells; the slide deck
(python-pptx) has titles, text boxes, a table and speaker notes.
A screenshot-style PNG announcement and a scanned PDF page (an image, no text layer) are
rendered with Pillow in the same CJK font; ingest reads them with the [ocr] extra.

Output is reproducible: fixed PDF/DOCX metadata dates, and the DOCX zip
entries are rewritten with a fixed timestamp, so re-running produces
byte-identical files for the same font.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"

FIXED_DATE = dt.datetime(2025, 3, 1, 9, 0, 0, tzinfo=dt.UTC)
ZIP_DATE = (2025, 3, 1, 9, 0, 0)
AUTHOR = "小禾优选帮助中心 (Hehe Select Help Center)"

# Candidate fonts, best first: (path, index inside a .ttc collection).
FONT_CANDIDATES = [
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),
    ("/usr/share/fonts/truetype/arphic/uming.ttc", 0),
    ("/usr/share/fonts/truetype/arphic/ukai.ttc", 0),
    ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", 0),
    ("/usr/share/fonts/wqy-microhei/wqy-microhei.ttc", 0),
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2),  # index 2 = SC
    ("/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc", 2),
]

# ---------------------------------------------------------------------------
# Document sources.  Each document is a list of blocks:
#   ("h1", text) ("h2", text) ("p", text) ("li", text)
#   ("table", [header_row, row, ...])   ("pagebreak", None)  [PDF only]
# ---------------------------------------------------------------------------

WARRANTY_PDF = {
    "path": "aftersales/warranty-policy.pdf",
    "title": "小禾优选商品保修政策",
    "subject": "保修期、保修范围、延保服务",
    "blocks": [
        ("h1", "小禾优选商品保修政策"),
        (
            "p",
            "版本：2024年10月版。适用于小禾优选自营商品和小禾智造自有品牌商品。入驻商家商品的保修以商家页面说明为准。",
        ),
        ("h2", "一、保修期从什么时候开始算"),
        (
            "p",
            "保修期自商品签收之日起计算。大家电需要安装的，自安装完成之日起计算；如果签收后30天内没有预约安装，则从签收后第30天开始计算。",
        ),
        ("h2", "二、各类商品的保修期"),
        (
            "li",
            "手机、平板、耳机、智能手表等数码产品：主机保修1年，电池、充电器、数据线等配件保修6个月。",
        ),
        ("li", "笔记本电脑、显示器、键盘鼠标等电脑及外设：保修1年。"),
        (
            "li",
            "小禾智造机械键盘（商品编号 HX-KB-3021）：整机保修2年，键帽磨损、打油属于正常损耗，不在保修范围内。",
        ),
        ("li", "电饭煲、吹风机、空气净化器等小家电：整机保修1年，滤芯、刀头、刷头等耗材不保修。"),
        ("li", "空调、冰箱、洗衣机等大家电：整机保修1年，主要部件（压缩机、电机）保修3年。"),
        ("li", "服装鞋包、家居日用品：不提供保修，出现质量问题按退换货规则处理。"),
        ("h2", "三、退、换、修的衔接"),
        (
            "p",
            "签收后7天内出现质量问题，可以选择退货、换货或维修；签收后15天内出现质量问题，可以选择换货或维修；超过15天但仍在保修期内，提供免费维修。同一个质量问题经过两次维修仍无法正常使用的，可凭维修记录申请换货。",
        ),
        ("h2", "四、保修凭证"),
        (
            "p",
            "您在小禾优选的订单号就是电子保修凭证，无需保留纸质发票或保修卡。申请保修时，商品机身上的序列号（SN码）必须与订单发货记录一致。二手转让的商品，新主人可以凭原订单号继续享受剩余保修期。",
        ),
        ("pagebreak", None),
        ("h2", "五、不属于免费保修的情况"),
        ("li", "人为损坏，例如摔落、挤压、进水或其他液体；"),
        ("li", "未经授权自行拆机、改装，或在非小禾优选授权网点维修过；"),
        ("li", "使用非原装配件、不符合要求的电源造成的损坏；"),
        ("li", "地震、火灾、雷击等不可抗力造成的损坏；"),
        ("li", "序列号被涂改、撕毁或与订单记录不符；"),
        ("li", "耗材和正常磨损，例如滤芯、刀头、键帽、外壳的自然划痕；"),
        ("li", "已经超过保修期。"),
        ("p", "以上情况可以申请付费维修。"),
        ("h2", "六、保修期外的付费维修"),
        (
            "p",
            "保修期外的商品，检测免费。检测后我们会在App中给出维修报价，您确认后才会开始维修；不同意维修的，商品原样寄回，回寄运费由您承担。付费维修更换的部件，同一故障自维修完成之日起保修90天。",
        ),
        ("h2", "七、小禾延保服务"),
        (
            "p",
            "部分数码产品和家电可以购买“小禾延保”，在原保修期结束后继续享受免费维修。延保需要在商品签收后30天内购买，可选1年延保或2年延保，价格分别为商品实付金额的5%和9%，最低10元。延保期内的保修范围与原保修相同；延保期内累计维修费用达到商品实付金额时，可按商品实付金额退款，延保随之终止。商品在签收后30天内退货的，延保费用全额退还。",
        ),
        ("h2", "八、如何申请保修"),
        (
            "p",
            "在App“我的订单”中找到该商品，点击“申请售后 - 维修”，描述故障并上传照片或视频。寄修流程、上门维修和维修时效请参阅《维修服务说明》。如有疑问，请拨打客服热线 400-820-6618（每天9:00-21:00）。",
        ),
    ],
}

PLUS_PDF = {
    "path": "membership/plus-membership-terms.pdf",
    "title": "小禾Plus会员服务协议",
    "subject": "付费会员小禾Plus的费用、权益、自动续费与退款",
    "blocks": [
        ("h1", "小禾Plus会员服务协议"),
        ("p", "协议编号：PLUS-TOS-2024。版本日期：2024年9月1日。"),
        (
            "p",
            "小禾Plus是小禾优选推出的付费会员服务。您开通小禾Plus，即表示已阅读并同意本协议。小禾Plus与按成长值评定的青禾、金禾、丰禾、禾尊会员等级相互独立，可以同时享有。",
        ),
        ("h2", "一、开通方式与费用"),
        ("li", "年卡：99元，有效期365天；"),
        ("li", "连续包年：每年89元，到期自动续费；"),
        ("li", "月卡：15元，有效期31天；"),
        ("li", "连续包月：每月12元，到期自动续费。"),
        (
            "p",
            "在App“我的 - 小禾Plus”页面开通，支付成功后立即生效。会员有效期自开通之时起计算，续费成功后有效期顺延。",
        ),
        ("h2", "二、会员权益"),
        (
            "li",
            "无门槛包邮：购买自营商品，收货地址在新疆、西藏以外的地区时，不论订单金额均免运费；新疆、西藏地区仍为实付满199元包邮。",
        ),
        ("li", "每月券包：每月1日发放2张“满59元减10元”平台券，当月有效。"),
        (
            "li",
            "退货免运费券：每月1日发放2张，当月有效，可与会员等级发放的退货免运费券同时持有，每次退货使用1张。",
        ),
        ("li", "会员日积分加倍：每月18日购物，获得的积分再翻一倍。"),
        ("li", "Plus专享价：标有“Plus价”的商品，Plus会员可按专享价购买。"),
        ("p", "权益内容可能随活动调整，调整前会在小禾Plus页面提前7天公告，已经发放的券不受影响。"),
        ("pagebreak", None),
        ("h2", "三、自动续费"),
        (
            "p",
            "选择连续包年或连续包月的，系统会在会员到期前1天自动扣费续期。扣费前5天，我们会通过短信和App消息提醒您。您可以随时在“我的 - 小禾Plus - 管理自动续费”中关闭自动续费，关闭后当前会员期仍然有效，到期后不再扣费。如果您是通过支付宝或微信的免密支付签约的，也可以在对应App的自动扣费管理中解约。",
        ),
        ("h2", "四、退款规则"),
        (
            "p",
            "年卡和连续包年的会员，在开通后7天内且未使用任何会员权益（包括享受无门槛包邮、领取或使用会员券、使用退货免运费券、购买Plus价商品）的，可以申请全额退款。已经使用过任何一项权益的，不予退款。月卡和连续包月的会员费用一经支付不退。自动续费扣款后24小时内未使用权益的，可申请退还本次续费。",
        ),
        ("h2", "五、使用规范"),
        (
            "p",
            "小禾Plus会员资格仅限开通账号本人使用，不得出租、出借或转让。出现以下情况的，小禾优选有权取消会员资格且不退还费用：利用会员权益批量代购或倒卖商品；12个月内7天无理由退货超过30次且无合理原因；以虚假交易套取优惠券或运费补贴。",
        ),
        ("h2", "六、协议变更与联系方式"),
        (
            "p",
            "本协议如有修改，将在生效前7天公告。修改涉及费用上调的，不影响您已支付的会员期；连续包月、连续包年用户如不同意修改，可以关闭自动续费。有关小禾Plus的问题，请联系在线客服或拨打客服热线 400-820-6618。",
        ),
    ],
}

SPECIAL_INVOICE_PDF = {
    "path": "invoices/special-vat-invoice.pdf",
    "title": "增值税专用发票申请须知",
    "subject": "增票资质审核、开具与邮寄、红字发票",
    "blocks": [
        ("h1", "增值税专用发票申请须知"),
        (
            "p",
            "本须知面向需要为小禾优选自营商品开具增值税专用发票（以下简称“专票”）的企业客户。个人用户不能申请专票，可以开具电子普通发票。",
        ),
        ("h2", "一、申请条件"),
        (
            "p",
            "申请单位应为增值税一般纳税人。每个小禾优选账号只能绑定一个增票资质，一个增票资质也只能被一个账号绑定。",
        ),
        ("h2", "二、需要提交的资料"),
        ("li", "单位名称和纳税人识别号（统一社会信用代码）；"),
        ("li", "注册地址和注册电话；"),
        ("li", "开户银行名称和银行账号；"),
        ("li", "加盖单位公章的《增票资质确认函》扫描件（模板可在提交页面下载）；"),
        ("li", "收票人姓名、电话和收票地址，可与商品收货地址不同。"),
        (
            "p",
            "在“我的 - 设置 - 增票资质”中提交。资质审核需要1-2个工作日，结果通过短信通知。资质信息需要修改时，须重新提交审核，审核期间不能选择专票。",
        ),
        ("h2", "三、开具与邮寄"),
        (
            "p",
            "资质审核通过后，下单时在发票选项中选择“增值税专用发票”。订单确认收货后5个工作日内开具，并以纸质发票的形式寄到收票地址，邮寄费用由小禾优选承担。专票与商品分开寄送，寄出后可在订单详情中查看发票的快递单号。",
        ),
        (
            "p",
            "下单时没有选择专票的，可以在订单确认收货后90天内申请补开专票；超过90天只能开具电子普通发票。",
        ),
        ("h2", "四、开票金额"),
        (
            "p",
            "专票金额为实际支付金额，包含运费；优惠券、满减、积分抵扣以及礼品卡支付的部分不开票。一个订单开具一张发票，不能合并或拆分。",
        ),
        ("h2", "五、退货与红字发票"),
        (
            "p",
            "发生退货时，如果专票尚未勾选认证抵扣，请把原发票寄回，我们作废后按剩余金额重新开具。如果专票已经勾选抵扣，需要贵司先在电子税务局提交红字发票信息确认单，我们再开具红字专票冲销。红字流程完成前，退款可以正常办理。",
        ),
        ("h2", "六、发票丢失"),
        (
            "p",
            "专票在邮寄途中丢失的，我们会联系快递公司核实，并为您重新开具。收到后遗失的，可以申请我们提供发票记账联复印件并加盖发票专用章，用于入账。",
        ),
        (
            "p",
            "专票相关问题，可发送邮件至 invoice@hehe-select.example，或联系在线客服（人工服务时间8:00-22:00）。",
        ),
    ],
}

REPAIR_DOCX = {
    "path": "aftersales/repair-service.docx",
    "title": "维修服务说明",
    "subject": "寄修、上门维修与维修时效",
    "blocks": [
        ("h1", "维修服务说明"),
        (
            "p",
            "本说明介绍小禾优选自营商品的维修方式、流程和时效。哪些商品在保修期内、哪些情况属于免费保修，请先查看《商品保修政策》。",
        ),
        ("h2", "一、维修方式"),
        (
            "p",
            "寄修：适用于数码产品、电脑外设和小家电。保修期内，小禾优选提供免费上门取件，维修后免费寄回，往返运费都由小禾优选承担。保修期外的商品，寄出运费由您承担，维修完成后免费寄回。",
        ),
        (
            "p",
            "上门维修：适用于空调、冰箱、洗衣机、电热水器等大家电。提交申请后24小时内，服务网点会电话联系您；城区一般在48小时内上门，乡镇地区可能需要3-5天。",
        ),
        ("h2", "二、寄修流程与时效"),
        (
            "table",
            [
                ["环节", "时效", "说明"],
                ["提交维修申请", "24小时内审核", "在“申请售后 - 维修”中描述故障并上传照片或视频"],
                ["上门取件", "审核通过后1-2天", "请把商品、配件装好，附上写有订单号的纸条"],
                ["检测", "收到商品后3个工作日内", "检测结果和报价会在App中通知"],
                ["维修", "5-7个工作日", "需要订购配件时可能延长，会提前告知"],
                ["寄回", "维修完成后1个工作日内寄出", "寄回运费由小禾优选承担"],
            ],
        ),
        (
            "p",
            "每个维修申请都会生成一个以WX开头的维修工单号，可在“售后详情”中查看进度。维修期间如需使用，可以联系客服咨询是否有备用机借用服务（仅限部分手机和笔记本电脑）。",
        ),
        ("h2", "三、送修前的自查"),
        ("p", "很多问题不需要送修就能解决。以小禾智造空气净化器 HX-AP-1180 为例："),
        (
            "p",
            "不开机：请确认电源插好，并检查底部滤芯仓门是否完全关闭。仓门没有关好时，安全开关会阻止机器启动。",
        ),
        (
            "p",
            "滤芯指示灯一直亮红色：表示滤芯到了更换时间。滤芯是耗材，不在保修范围内，建议每6个月更换一次。更换新滤芯后，长按“模式”键5秒即可重置指示灯。",
        ),
        ("p", "风量变小、有异味：多半是滤芯堵塞或受潮，更换滤芯后一般可以恢复。"),
        ("p", "如果自查后仍有问题，再提交维修申请，可以节省您的时间。"),
        ("h2", "四、维修前请注意"),
        (
            "p",
            "送修手机、平板、电脑前，请备份数据并退出账号、关闭“查找设备”功能。维修过程中可能需要恢复出厂设置，小禾优选不对数据丢失负责。请不要把存储卡、SIM卡和个人物品随商品寄出。",
        ),
        ("h2", "五、维修结果有异议"),
        (
            "p",
            "对检测结论有异议的，可以在收到结论后7天内申请复检，复检由另一家授权网点完成。维修后同一故障复发的，保修期内和付费维修后的90天内都可以免费再次维修。如有疑问，请拨打客服热线 400-820-6618。",
        ),
    ],
}

ACCOUNT_DOCX = {
    "path": "account/account-security.docx",
    "title": "账号安全与手机号换绑",
    "subject": "换绑手机号、人工申诉、登录设备管理",
    "blocks": [
        ("h1", "账号安全与手机号换绑"),
        (
            "p",
            "您的小禾优选账号里有订单、地址、余额和积分，请妥善保护。本文说明如何更换绑定手机号、原手机号不能用时怎么办，以及如何管理登录设备。",
        ),
        ("h2", "一、更换绑定手机号"),
        (
            "p",
            "原手机号还能正常收短信时：进入“我的 - 设置 - 账号与安全 - 更换手机号”，先输入原手机号收到的验证码，再输入新手机号收到的验证码，即可完成换绑。新手机号不能是已经注册过小禾优选的号码。",
        ),
        ("p", "原手机号已经停用、丢失，收不到短信时：请在登录页选择“手机号不可用”，进入人工申诉。"),
        ("h2", "二、人工申诉需要准备什么"),
        (
            "p",
            "为了确认您是账号的真正主人，人工申诉需要提交：本人身份证正反面照片；本人手持身份证的照片；最近3个订单中任意2个订单的商品名称或收货地址；以及新的手机号。账号已经实名认证的，申诉人必须与实名信息一致。",
        ),
        (
            "p",
            "人工申诉在3个工作日内审核完成，结果会发送到您填写的新手机号。审核通过后，账号会自动换绑到新手机号。换绑手机号后30天内不能申请注销账号。",
        ),
        ("h2", "三、安全限制一览"),
        (
            "table",
            [
                ["项目", "规则", "到期或解除方式"],
                ["登录密码连续输错5次", "锁定登录30分钟", "自动解锁，或改用验证码登录"],
                ["支付密码连续输错5次", "锁定余额和礼品卡支付3小时", "自动解锁，或找回支付密码"],
                ["短信验证码", "有效期5分钟，每个手机号每天最多10次", "次日重置"],
                ["同时登录的设备", "最多5台", "超出时最早登录的设备自动下线"],
                ["实名认证", "一个身份证最多认证3个账号", "注销其他账号后释放名额"],
            ],
        ),
        ("h2", "四、登录设备管理"),
        (
            "p",
            "在“设置 - 账号与安全 - 登录设备管理”中，可以看到当前登录您账号的所有设备及最近登录时间和地点。发现不认识的设备，请点击“移除”使其下线，并立即修改登录密码。",
        ),
        (
            "p",
            "当账号在新设备或常用地点以外的城市登录时，系统会发送短信和App消息提醒。如果不是您本人操作，请马上修改密码。",
        ),
        ("h2", "五、怀疑账号被盗怎么办"),
        (
            "p",
            "第一步，立即修改登录密码和支付密码；第二步，在登录设备管理中移除陌生设备；第三步，检查收货地址是否被修改、是否有陌生订单。无法登录时，请拨打客服热线 400-820-6618，选择“账号紧急冻结”，客服核实身份后会先冻结账号，冻结期间任何人都不能下单和使用余额，防止损失扩大。",
        ),
        (
            "p",
            "请记住：小禾优选的工作人员不会向您索要验证码和密码，也不会要求您把账号交给他人“代为处理”。",
        ),
    ],
}

PRICE_DOCX = {
    "path": "returns/price-protection.docx",
    "title": "价格保护规则",
    "subject": "买贵了退差价的条件与申请方式",
    "blocks": [
        ("h1", "价格保护规则"),
        ("p", "规则编号：JB-2025-02。生效日期：2025年2月1日。"),
        ("p", "价格保护（简称“价保”）是指：您购买的自营商品在价保期内降价了，可以申请退还差价。"),
        ("h2", "一、价保期限"),
        (
            "p",
            "自付款成功起，至商品签收后第7天的24:00止。例如4月1日付款、4月3日签收，价保期到4月10日24:00结束。已经申请退货退款的商品，不再享受价保。",
        ),
        ("h2", "二、差价怎么算"),
        (
            "p",
            "差价 = 您购买时该商品的实付单价 - 申请价保时商品页面的售价。比较的是同一商品、同一规格、同一销售方式下的页面售价，不计算优惠券、满减、积分抵扣等个人优惠。同一订单中的同一商品，价保期内最多可以申请2次，第二次以降价后的价格为基准。",
        ),
        ("p", "差价退回到小禾钱包余额，实时到账，可以用于购物，也可以提现到本人储蓄卡。"),
        ("h2", "三、哪些情况支持价保"),
        (
            "table",
            [
                ["情形", "是否支持价保"],
                ["自营商品页面售价直接下调", "支持"],
                ["商品参加全场限时直降活动", "支持"],
                ["秒杀价、直播专享价、拼团价", "不支持"],
                ["使用优惠券或满减后到手价更低", "不支持"],
                ["积分商城兑换、赠品价值变化", "不支持"],
                ["预售商品的定金和尾款", "不支持"],
                ["入驻商家商品", "以商家承诺为准，未标注“支持价保”的不支持"],
            ],
        ),
        ("h2", "四、如何申请"),
        (
            "p",
            "打开“我的订单 - 订单详情”，点击“价格保护”，系统会自动比对当前价格。符合条件的，差价立即退到小禾钱包；不符合条件的，页面会显示具体原因。也可以在“我的 - 客服中心 - 价格保护”中一键查询所有价保期内的订单。",
        ),
        ("h2", "五、常见问题"),
        (
            "p",
            "价保成功后又退货了，差价怎么处理？已经退到小禾钱包的差价会从退货退款中扣除，也就是说退款金额等于您的实付金额减去已退差价。",
        ),
        (
            "p",
            "同一订单买了多件同款商品，怎么算？价保按件计算。申请时可以选择需要价保的件数，每件商品分别计算差价。",
        ),
        (
            "p",
            "价保期过了才看到降价，还能申请吗？不能。超过签收后第7天的24:00，系统将不再受理该订单的价保申请。",
        ),
        ("h2", "六、其他说明"),
        (
            "p",
            "因系统故障导致的错误标价（明显低于成本的异常价格）不作为价保依据。对价保结果有疑问的，请联系在线客服（人工服务时间8:00-22:00）或拨打 400-820-6618。",
        ),
    ],
}

PDF_DOCS = [WARRANTY_PDF, PLUS_PDF, SPECIAL_INVOICE_PDF]
DOCX_DOCS = [REPAIR_DOCX, ACCOUNT_DOCX, PRICE_DOCX]


# ---------------------------------------------------------------------------
# Font lookup
# ---------------------------------------------------------------------------


def find_font(explicit: str | None, index: int | None) -> tuple[Path, int]:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            sys.exit(f"error: font file not found: {path}")
        return path, index or 0
    for cand, idx in FONT_CANDIDATES:
        if Path(cand).is_file():
            if "Noto" in cand:
                print(
                    f"warning: using {cand}; pypdf will extract its Chinese text "
                    "with spaces between characters. Install fonts-wqy-microhei "
                    "for clean text extraction.",
                    file=sys.stderr,
                )
            return Path(cand), idx if index is None else index
    sys.exit(
        "error: no CJK font found for the PDFs.\n"
        "Install one, e.g.  apt-get install -y fonts-wqy-microhei\n"
        "or pass a TrueType CJK font with  --font /path/to/font.ttc"
    )


# ---------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------

# Characters that must not start a line (they stay on the previous line,
# overhanging into the margin a little) and that must not end a line.
NO_LINE_START = set("，。、；：？！）》」』”’%…,.;:!?)]}")
NO_LINE_END = set("（《「『“‘([{")
_TOKEN_RE = re.compile(r"[A-Za-z0-9@._%+\-/:#]+|\s+|.", re.S)


def wrap_text(pdf, text: str, width: float) -> list[str]:
    """Break text into lines that fit width.

    fpdf2's built-in wrapping prefers breaking at spaces, which moves whole
    Chinese clauses to the next line, and splits ASCII words such as
    "Plus" or "30" when it has to break inside a long space-free run. Here
    every CJK character is a break opportunity, ASCII words/numbers/codes are
    kept whole, and the usual Chinese punctuation rules are respected.
    """
    lines: list[str] = []
    line = ""
    for tok in _TOKEN_RE.findall(text):
        if tok.isspace():
            if line:
                line += " "
            continue
        candidate = line + tok
        if pdf.get_string_width(candidate) <= width or not line:
            line = candidate
            continue
        if tok in NO_LINE_START:
            line = candidate  # small overhang instead of a bad line start
            continue
        carry = ""
        while line and line[-1] in NO_LINE_END:
            carry = line[-1] + carry
            line = line[:-1]
        lines.append(line.rstrip())
        line = carry + tok
    if line.strip():
        lines.append(line.rstrip())
    return lines


def _write_lines(
    pdf, text: str, size: float, height: float, indent: float = 0.0, bullet: str | None = None
) -> None:
    pdf.set_font("cjk", size=size)
    x0 = pdf.l_margin
    for i, line in enumerate(wrap_text(pdf, text, pdf.epw - indent)):
        if pdf.will_page_break(height):
            pdf.add_page()
        if bullet and i == 0:
            pdf.set_x(x0)
            pdf.cell(indent, height, text=bullet)
        pdf.set_x(x0 + indent)
        pdf.cell(pdf.epw - indent, height, text=line, new_x="LMARGIN", new_y="NEXT")


def write_pdf(doc: dict, font_path: Path, font_index: int) -> Path:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(doc["title"])
    pdf.set_subject(doc["subject"])
    pdf.set_author(AUTHOR)
    pdf.set_creator("scripts/make_corpus_docs.py")
    pdf.set_producer("fpdf2")
    pdf.set_lang("zh-CN")
    pdf.add_font("cjk", "", str(font_path), collection_font_number=font_index)
    pdf.add_page()
    for kind, content in doc["blocks"]:
        if kind == "h1":
            _write_lines(pdf, content, 18, 11)
            pdf.ln(3)
        elif kind == "h2":
            pdf.ln(2)
            _write_lines(pdf, content, 13.5, 8)
            pdf.ln(1)
        elif kind == "p":
            _write_lines(pdf, content, 11, 7)
            pdf.ln(2)
        elif kind == "li":
            _write_lines(pdf, content, 11, 7, indent=5, bullet="•")
            pdf.ln(1)
        elif kind == "pagebreak":
            pdf.add_page()
        else:
            raise ValueError(f"block type {kind!r} not supported in PDF")
    out = CORPUS / doc["path"]
    out.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out))
    return out


# ---------------------------------------------------------------------------
# DOCX
# ---------------------------------------------------------------------------


def _normalize_zip(data: bytes) -> bytes:
    """Rewrite a zip with fixed timestamps and entry order."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            new = zipfile.ZipInfo(info.filename, date_time=ZIP_DATE)
            new.compress_type = zipfile.ZIP_DEFLATED
            new.external_attr = 0o644 << 16
            dst.writestr(new, src.read(info.filename))
    return buf.getvalue()


def write_docx(doc: dict) -> Path:
    import docx
    from docx.oxml.ns import qn

    d = docx.Document()
    # East Asian font for all text styles, so Word renders the Chinese nicely.
    for style_name in ("Normal", "Heading 1", "Heading 2", "Title"):
        style = d.styles[style_name]
        rpr = style.element.get_or_add_rPr()
        rfonts = rpr.find(qn("w:rFonts"))
        if rfonts is None:
            rfonts = rpr.makeelement(qn("w:rFonts"), {})
            rpr.append(rfonts)
        rfonts.set(qn("w:eastAsia"), "Microsoft YaHei")

    props = d.core_properties
    props.title = doc["title"]
    props.subject = doc["subject"]
    props.author = AUTHOR
    props.last_modified_by = AUTHOR
    props.language = "zh-CN"
    props.created = FIXED_DATE.replace(tzinfo=None)
    props.modified = FIXED_DATE.replace(tzinfo=None)
    props.last_printed = FIXED_DATE.replace(tzinfo=None)
    props.revision = 1

    for kind, content in doc["blocks"]:
        if kind == "h1":
            d.add_heading(content, level=1)
        elif kind == "h2":
            d.add_heading(content, level=2)
        elif kind == "p":
            d.add_paragraph(content)
        elif kind == "li":
            d.add_paragraph(content, style="List Bullet")
        elif kind == "table":
            header, *rows = content
            table = d.add_table(rows=1, cols=len(header))
            table.style = "Table Grid"
            for cell, text in zip(table.rows[0].cells, header, strict=True):
                cell.text = text
                for run in cell.paragraphs[0].runs:
                    run.bold = True
            for row in rows:
                cells = table.add_row().cells
                for cell, text in zip(cells, row, strict=True):
                    cell.text = text
        elif kind == "pagebreak":
            pass
        else:
            raise ValueError(f"block type {kind!r} not supported in DOCX")

    buf = io.BytesIO()
    d.save(buf)
    out = CORPUS / doc["path"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(_normalize_zip(buf.getvalue()))
    return out


# ---------------------------------------------------------------------------
# Excel workbook: an FAQ sheet and a table sheet ("" under a merged cell).

FAQ_WORKBOOK = {
    "path": "faq/客服FAQ.xlsx",
    "title": "客服常见问题（礼品包装、到货通知、积分商城）",
    "sheets": [
        (
            "常见问题",
            [
                ["标准问题", "相似问题", "答案", "分类"],
                [
                    "可以提供礼品包装吗？",
                    "能包装成礼物吗\n送人的东西能帮忙包装吗|礼盒包装怎么收费",
                    "可以。自营商品在结算页勾选“礼品包装”即可，每件收费5元，禾尊会员免费。礼品包装的包裹内会附一张贺卡，不放价格单。",
                    "订单",
                ],
                [
                    "想买的商品缺货了怎么办？",
                    "没货了什么时候补货；缺货商品能预约吗",
                    "在商品页点击“到货通知”，商品补货后会通过App消息和短信提醒您，提醒保留30天。到货通知不会为您预留库存，收到提醒后请尽快下单。",
                    "订单",
                ],
                [
                    "积分商城兑换的实物礼品多久发货？",
                    "积分换的东西什么时候到\n积分兑换的礼品怎么还没发货",
                    "兑换成功后3个工作日内发货，免运费，可以在“积分商城 - 兑换记录”中查看物流。",
                    "积分",
                ],
                [
                    "积分兑换的优惠券在哪里看？",
                    "积分换的券去哪了;兑换的优惠券有效期多久",
                    "兑换成功后立即发放到“我的 - 优惠券”，自兑换之日起30天内有效，过期不退还积分。",
                    "积分",
                ],
                [
                    "积分兑换后可以取消吗？",
                    "兑换错了能退积分吗|积分兑换能撤销吗",
                    "不可以。积分一经兑换不能取消，也不退回积分；兑换的实物礼品有质量问题的，可在签收后7天内联系客服换货。",
                    "积分",
                ],
            ],
        ),
        (
            "积分商城兑换表",
            [
                ["类别", "兑换项目", "所需积分", "每月限兑", "说明"],
                ["优惠券", "5元无门槛券", 500, "2张", "兑换后30天内有效"],
                ["", "满100元减15元券", 1000, "2张", "仅限自营商品"],
                ["", "8元运费券", 600, "3张", "可与满减券同时使用"],
                ["实物礼品", "小禾智造保温杯", 3000, "1件", "3个工作日内发货"],
                ["", "小禾智造帆布袋", 1500, "1件", "3个工作日内发货"],
                ["公益", "捐赠1元给乡村图书角", 100, "不限", "捐赠后不可撤回"],
            ],
        ),
    ],
}

# Merged ranges of the table sheet: each category over its rows.
FAQ_WORKBOOK_MERGES = {"积分商城兑换表": ["A2:A4", "A5:A6"]}


def write_xlsx(doc: dict) -> Path:
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font

    book = Workbook()
    book.remove(book.active)
    props = book.properties
    props.title = doc["title"]
    props.creator = AUTHOR
    props.lastModifiedBy = AUTHOR
    props.created = FIXED_DATE.replace(tzinfo=None)
    props.modified = FIXED_DATE.replace(tzinfo=None)
    for name, rows in doc["sheets"]:
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append([None if cell == "" else cell for cell in row])
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for ref in FAQ_WORKBOOK_MERGES.get(name, []):
            sheet.merge_cells(ref)
        for row in sheet.iter_rows(min_row=2):
            for cell in row:
                cell.alignment = Alignment(wrap_text=True, vertical="top")
        sheet.column_dimensions["A"].width = 24
        sheet.column_dimensions["B"].width = 30
        sheet.column_dimensions["C"].width = 50
    buf = io.BytesIO()
    book.save(buf)
    out = CORPUS / doc["path"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(_fixed_xlsx_modified(_normalize_zip(buf.getvalue())))
    return out


def _fixed_xlsx_modified(data: bytes) -> bytes:
    """openpyxl stamps the save time into docProps/core.xml; put the fixed date back."""
    stamp = FIXED_DATE.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        entries = [(info, src.read(info.filename)) for info in src.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info, content in entries:
            if info.filename == "docProps/core.xml":
                content = re.sub(
                    rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)",
                    rb"\g<1>" + stamp + rb"\g<2>",
                    content,
                )
            dst.writestr(info, content)
    return buf.getvalue()


# ---------------------------------------------------------------------------
# Slide deck: per slide a title, text boxes (top to bottom), an optional table and notes.

MEMBER_DAY_DECK = {
    "path": "announcements/2025-member-day.pptx",
    "title": "小禾优选会员日活动说明（2025年版）",
    "slides": [
        {
            "title": "小禾优选会员日",
            "texts": [
                "每月18日 00:00-23:59",
                "会员日当天三重礼：积分翻倍、会员日券、积分商城限时8折",
            ],
        },
        {
            "title": "会员日三重礼",
            "texts": [
                "小禾Plus会员当天购物积分再翻一倍，积分同样在确认收货后第7天发放。",
                "金禾及以上会员当天可领取一张会员日券，仅限当天使用，每个账号每月限领1张：",
            ],
            "table": [
                ["会员等级", "会员日券"],
                ["金禾会员", "满300元减30元"],
                ["丰禾会员", "满300元减40元"],
                ["禾尊会员", "满300元减50元"],
            ],
            "notes": "会员日券视同平台券：可以与店铺券叠加，不能与其他平台券叠加。",
        },
        {
            "title": "注意事项",
            "texts": [
                "积分商城的优惠券类兑换项目在会员日当天按8折所需积分兑换，每月限兑数量不变。",
                "秒杀商品、直播专享价商品和礼品卡不参加会员日活动。",
            ],
            "notes": "客服口径：会员日券领取后未使用的，过了当天自动失效，不补发。",
        },
    ],
}


def write_pptx(doc: dict) -> Path:
    from pptx import Presentation
    from pptx.util import Inches, Pt

    deck = Presentation()
    props = deck.core_properties
    props.title = doc["title"]
    props.author = AUTHOR
    props.last_modified_by = AUTHOR
    props.language = "zh-CN"
    props.created = FIXED_DATE.replace(tzinfo=None)
    props.modified = FIXED_DATE.replace(tzinfo=None)
    props.revision = 1
    for spec in doc["slides"]:
        slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
        slide.shapes.title.text = spec["title"]
        top = 1.8
        for text in spec["texts"]:
            box = slide.shapes.add_textbox(Inches(0.8), Inches(top), Inches(8.4), Inches(0.8))
            box.text_frame.word_wrap = True
            box.text_frame.text = text
            box.text_frame.paragraphs[0].runs[0].font.size = Pt(18)
            top += 0.9
        if "table" in spec:
            header, *rows = spec["table"]
            shape = slide.shapes.add_table(
                len(rows) + 1, len(header), Inches(0.8), Inches(top), Inches(8.4), Inches(1.6)
            )
            for r, row in enumerate([header, *rows]):
                for c, text in enumerate(row):
                    shape.table.cell(r, c).text = text
        if "notes" in spec:
            slide.notes_slide.notes_text_frame.text = spec["notes"]
    buf = io.BytesIO()
    deck.save(buf)
    out = CORPUS / doc["path"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(_normalize_zip(buf.getvalue()))
    return out


# ---------------------------------------------------------------------------
# Images read by OCR (the [ocr] extra): a screenshot-style announcement (PNG) and a scanned
# page (a PDF whose page is one image, no text layer). What they say is in no text file, so
# only OCR can answer the questions about them.

RETURN_ADDRESS_NOTICE = {
    "path": "announcements/2025-return-address-change.png",
    "title": "关于退货寄回地址变更的通知",
    "paragraphs": [
        "发布日期：2025年5月20日",
        "尊敬的小禾优选用户：",
        "为了加快退货质检和退款速度，自营商品的退货统一由新建的武汉退货处理中心接收。",
        "自2025年6月1日起，自行寄回的退货请寄到：湖北省武汉市东西湖区银潭路168号，小禾优选退货处理中心收，电话027-5550-6618。",
        "原杭州仓退货地址从6月1日起停止接收。5月31日前已经寄出的退货包裹照常处理，不受影响。",
        "预约上门取件的退货不需要填写地址，快递员会直接送到退货处理中心。",
        "寄回时请在包裹内放一张写有订单号的纸条，方便仓库快速核对。",
    ],
    "footer": "小禾优选售后服务中心",
}

TRADE_IN_SCAN = {
    "path": "aftersales/trade-in-subsidy-scan.pdf",
    "title": "小禾优选家电以旧换新补贴标准",
    "paragraphs": [
        "本标准自2025年4月1日起执行。",
        "一、购买大家电时，可以在下单页勾选“以旧换新”，预约旧机回收。送装师傅上门安装新机时，一并拆除并带走旧机。",
        "二、补贴标准：每回收一台旧冰箱或旧洗衣机补贴100元，旧空调补贴150元，旧电视机补贴80元。",
        "三、旧机品牌不限，但需要整机完整；每个订单限回收1台与新机同品类的旧机。",
        "四、补贴在新机安装完成后3个工作日内，以小禾钱包余额的形式发放，可以提现。",
        "五、旧机拆除免费；需要从高层搬运且没有电梯的，按安装收费标准另收搬运费。",
    ],
    "footer": "小禾优选售后服务中心（盖章）",
}


class _PillowMeasure:
    """What ``wrap_text`` needs from an FPDF object, measured with a Pillow font instead."""

    def __init__(self, font) -> None:
        self.font = font

    def get_string_width(self, text: str) -> float:
        return self.font.getlength(text)


def _render_page(doc: dict, font_path: Path, font_index: int, width: int, size: int, banner):
    """The announcement as a greyscale/RGB Pillow image: a title (on a coloured banner for a
    screenshot), wrapped paragraphs, a right-aligned footer."""
    from PIL import Image, ImageDraw, ImageFont

    body = ImageFont.truetype(str(font_path), size, index=font_index)
    heading = ImageFont.truetype(str(font_path), int(size * 1.35), index=font_index)
    margin = size * 2
    step = int(size * 1.7)
    lines: list[str | None] = []  # None: a paragraph gap
    for paragraph in doc["paragraphs"]:
        lines.extend(wrap_text(_PillowMeasure(body), paragraph, width - 2 * margin))
        lines.append(None)
    top = int(size * 4.5)
    height = top + step * len(lines) + size * 4
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    if banner:
        draw.rectangle([0, 0, width, int(size * 3.2)], fill=banner)
        draw.text((margin, int(size * 0.8)), doc["title"], font=heading, fill="white")
    else:
        title_width = heading.getlength(doc["title"])
        draw.text(((width - title_width) / 2, size), doc["title"], font=heading, fill=(20, 20, 20))
    y = top
    for line in lines:
        if line is not None:
            draw.text((margin, y), line, font=body, fill=(30, 30, 30))
        y += step if line is not None else step // 2
    footer_width = body.getlength(doc["footer"])
    draw.text(
        (width - margin - footer_width, y + size), doc["footer"], font=body, fill=(30, 30, 30)
    )
    return image


def write_screenshot(doc: dict, font_path: Path, font_index: int) -> Path:
    """A phone-app style announcement screenshot (PNG, no text layer anywhere)."""
    image = _render_page(doc, font_path, font_index, width=900, size=28, banner=(255, 122, 0))
    out = CORPUS / doc["path"]
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, "PNG", optimize=True)
    return out


def write_scanned_pdf(doc: dict, font_path: Path, font_index: int) -> Path:
    """One A4 page scanned at 150 dpi: the text rendered to a greyscale image with a slightly
    grey paper and speckles, wrapped into a PDF page with no text layer (Pillow writes it)."""
    import random

    from PIL import Image

    page = _render_page(doc, font_path, font_index, width=1240, size=30, banner=None)
    scan = Image.new("L", (1240, 1754), 246)
    scan.paste(page.convert("L").point(lambda v: min(v, 246)), (0, 80))
    rng = random.Random(15)  # fixed speckles: the file stays byte-identical
    for _ in range(1500):
        scan.putpixel((rng.randrange(1240), rng.randrange(1754)), rng.randrange(170, 235))
    out = CORPUS / doc["path"]
    out.parent.mkdir(parents=True, exist_ok=True)
    fixed = FIXED_DATE.timetuple()  # Pillow writes a struct_time as a PDF date
    scan.save(
        out,
        "PDF",
        resolution=150,
        title=doc["title"],
        author=AUTHOR,
        creationDate=fixed,
        modDate=fixed,
    )
    return out


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--font", help="path to a CJK TrueType font (.ttf/.ttc) for the PDFs")
    parser.add_argument(
        "--font-index",
        type=int,
        default=None,
        help="font number inside a .ttc collection (default: auto)",
    )
    parser.add_argument(
        "--only",
        choices=["pdf", "docx", "xlsx", "pptx", "ocr"],
        help="build only one format (ocr: the PNG screenshot and the scanned PDF)",
    )
    args = parser.parse_args(argv)

    written = []
    if args.only in (None, "pdf"):
        font_path, font_index = find_font(args.font, args.font_index)
        print(f"PDF font: {font_path} (index {font_index})")
        for doc in PDF_DOCS:
            written.append(write_pdf(doc, font_path, font_index))
    if args.only in (None, "docx"):
        for doc in DOCX_DOCS:
            written.append(write_docx(doc))
    if args.only in (None, "xlsx"):
        written.append(write_xlsx(FAQ_WORKBOOK))
    if args.only in (None, "pptx"):
        written.append(write_pptx(MEMBER_DAY_DECK))
    if args.only in (None, "ocr"):
        font_path, font_index = find_font(args.font, args.font_index)
        written.append(write_screenshot(RETURN_ADDRESS_NOTICE, font_path, font_index))
        written.append(write_scanned_pdf(TRADE_IN_SCAN, font_path, font_index))
    for path in written:
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
